"""Keep a snapshot's or restore's peak memory near what it holds, not what the C allocator keeps around.

glibc serves large blocks (pack buffers of ~16 MiB, file pieces of up to 4 MiB)
from mmap only above a threshold that it raises every time such a block is
freed, up to 32 MiB; after the first pack, every later 16 MiB buffer comes
from the heap arenas of whichever thread allocated it and stays resident when
freed. With several threads that held ~20-40 MiB of peak RSS that nothing
used. Fixing the threshold at 1 MiB (which also stops the adjustment) hands
large blocks straight back to the kernel. Elsewhere (musl, macOS) this is a
no-op.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1024 * 1024
_done = False


def return_large_blocks() -> bool:
    """Ask glibc to mmap (and so really free) every block of 1 MiB or more; True when it agreed. Idempotent."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _done
