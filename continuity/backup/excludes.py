"""What a snapshot leaves out, with restic's semantics, so exclude files carry over unchanged.

* **Patterns** (``--exclude``, ``--iexclude``, ``exclude:``) are matched
  against the absolute path of every entry, component by component, with Go's
  ``filepath.Match`` per component (``*``, ``?``, ``[a-z]``, ``[^a]``,
  ``\\`` escapes; a wildcard never crosses ``/``) plus ``**`` as a whole
  component for any number of directories. A pattern starting with ``/`` is
  anchored at the root and matches a prefix of the path (``/var/cache``
  excludes everything below it); any other pattern matches any run of
  consecutive components (``foo`` matches ``/a/foo/b`` but not
  ``/a/foobar``). A trailing ``/`` is ignored. ``!pattern`` re-includes what
  an earlier pattern excluded; as in restic (and gitignore) nothing inside an
  excluded directory can be re-included, because it is never visited.
* **Exclude files**: one pattern per line, surrounding blanks trimmed, empty
  lines and ``#`` lines ignored, ``$VAR``/``${VAR}`` expanded (unset: empty),
  ``$$`` a literal ``$``.
* **Tag files** (``--exclude-caches``, ``--exclude-if-present NAME[:HEADER]``):
  a directory holding the tag file keeps only the tag file; everything else in
  it is left out. ``--exclude-caches`` is ``CACHEDIR.TAG`` with the signature
  of the Cache Directory Tagging Specification; a tag whose signature is wrong
  excludes nothing and says so.
* **One file system** (``--one-file-system``): entries on another device than
  the source they were found under are left out, except that a mount point
  itself is kept, as an empty directory.

Sources named explicitly are never excluded, only what is found below them.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
_SPECIAL = set("\\[]*?")


class BadPattern(ValueError):
    """A pattern Go's filepath.Match would reject (unclosed ``[``, trailing ``\\``, ...)."""


def _class_char(pat: str, i: int) -> tuple[str, int]:
    """One character of a ``[...]`` class at ``pat[i]`` (maybe escaped); as Go's ``getEsc``."""
    if i >= len(pat) or pat[i] in "-]":
        raise BadPattern(f"bad character class in {pat!r}")
    if pat[i] == "\\":
        i += 1
        if i >= len(pat):
            raise BadPattern(f"trailing backslash in {pat!r}")
    if i + 1 >= len(pat):
        raise BadPattern(f"unclosed character class in {pat!r}")
    return pat[i], i + 1


def _component_regex(pat: str) -> str:
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise BadPattern(f"trailing backslash in {pat!r}")
            out.append(re.escape(pat[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negated = i < n and pat[i] == "^"
            if negated:
                i += 1
            ranges: list[str] = []
            count = 0
            while True:
                if i < n and pat[i] == "]" and count > 0:
                    i += 1
                    break
                lo, i = _class_char(pat, i)
                hi = lo
                if pat[i] == "-":
                    hi, i = _class_char(pat, i + 1)
                count += 1
                if lo <= hi:  # Go accepts a reversed range; it simply matches nothing
                    ranges.append(f"{re.escape(lo)}-{re.escape(hi)}")
            if ranges:
                out.append(f"[{'^' if negated else ''}{''.join(ranges)}]")
            else:
                out.append("[^/]" if negated else "(?!)")
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def _compiled(pat: str) -> re.Pattern[str]:
    return re.compile(_component_regex(pat), re.DOTALL)


@dataclass(frozen=True)
class _Part:
    text: str  # "/" marks an anchored pattern's root; "" stands for "**"
    simple: bool

    def matches(self, name: str) -> bool:
        return self.text == name if self.simple else _compiled(self.text).fullmatch(name) is not None


@dataclass(frozen=True)
class Pattern:
    original: str
    parts: tuple[_Part, ...]
    negated: bool


def _split(path: str) -> list[str]:
    parts = path.split("/")
    if parts[0] == "":
        parts[0] = "/"
    return parts


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def parse(pattern: str) -> Pattern:
    """A pattern, checked: raises :class:`BadPattern` where restic would refuse it."""
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    if not body:
        raise BadPattern(f"empty pattern {pattern!r}")
    parts = []
    for piece in _split(_clean(body)):
        simple = not (_SPECIAL & set(piece))
        if piece == "**":
            parts.append(_Part("", True))
            continue
        if not simple and piece != "/":
            _compiled(piece)  # raises BadPattern now, not in the middle of a snapshot
        parts.append(_Part(piece, simple))
    return Pattern(pattern, tuple(parts), negated)


def _match(parts: tuple[_Part, ...], strs: list[str]) -> bool:
    """restic's ``filter.match``: does the pattern match ``strs`` (a split absolute path)?"""
    pos = next((i for i, p in enumerate(parts) if p.text == ""), None)
    if pos is not None:
        # expand "**" into 0, 1, 2 ... single-component wildcards
        star = _Part("*", False)
        for i in range(0, len(strs) - len(parts) + 2):
            candidate = parts[:pos] + (star,) * i + parts[pos + 1:]
            if _match(candidate, strs):
                return True
        return False
    if not parts:
        return not strs
    if len(parts) > len(strs):
        return False
    min_off, max_off = 0, len(strs) - len(parts)
    if parts[0].text == "/":
        max_off = 0
    elif strs[0] == "/":
        min_off = 1  # a relative pattern never matches the root marker
    for off in range(max_off, min_off - 1, -1):
        if all(parts[i].matches(strs[off + i]) for i in range(len(parts) - 1, -1, -1)):
            return True
    return False


def matches(pattern: str, path: str) -> bool:
    """Whether one (non-negated) pattern matches ``path``."""
    return _match(parse(pattern).parts, _split(path))


def list_match(patterns: list[Pattern], path: str) -> bool:
    """restic's ``filter.List``: the last word goes to ``!`` patterns, which un-match earlier matches."""
    if not patterns:
        return False
    strs = _split(path)
    negations = any(p.negated for p in patterns)
    matched = False
    for p in patterns:
        m = _match(p.parts, strs)
        if p.negated:
            matched = matched and not m
        else:
            matched = matched or m
            if matched and not negations:
                break
    return matched


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Go's ``os.Expand`` with restic's mapping: ``$VAR``/``${VAR}`` (unset: empty), ``$$`` a literal ``$``."""
    env = os.environ if env is None else env
    out: list[str] = []
    i = j = 0
    while j < len(text):
        if text[j] == "$" and j + 1 < len(text):
            out.append(text[i:j])
            name, width = _shell_name(text[j + 1:])
            if name == "" and width > 0:
                pass  # invalid syntax ("${", "${}"): eaten, as Go does
            elif name == "":
                out.append("$")
            else:
                out.append("$" if name == "$" else env.get(name, ""))
            j += width
            i = j + 1
        j += 1
    out.append(text[i:])
    return "".join(out)


def _shell_name(s: str) -> tuple[str, int]:
    special = "*#$@!?-0123456789"
    if s[0] == "{":
        if len(s) > 2 and s[1] in special and s[2] == "}":
            return s[1], 3
        end = s.find("}", 1)
        if end == 1:
            return "", 2
        if end < 0:
            return "", 1
        return s[1:end], end + 1
    if s[0] in special:
        return s[0], 1
    k = 0
    while k < len(s) and (s[k] == "_" or s[k].isascii() and s[k].isalnum()):
        k += 1
    return s[:k], k


def read_pattern_file(path: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Patterns of an exclude file (raises OSError as the caller reports it)."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(expand_env(line, env))
    return out


def parse_tag_spec(spec: str) -> tuple[str, str]:
    """``NAME[:HEADER]`` of ``--exclude-if-present``."""
    name, _, header = spec.partition(":")
    if not name:
        raise BadPattern(f"--exclude-if-present {spec!r}: no tag file name")
    if "/" in name:
        raise BadPattern(f"--exclude-if-present {spec!r}: the tag is a file name, not a path")
    return name, header


@dataclass(frozen=True)
class ExcludeOptions:
    """The restic-style exclude options of one snapshot, as given (files not read yet)."""

    exclude: tuple[str, ...] = ()
    iexclude: tuple[str, ...] = ()
    exclude_file: tuple[str, ...] = ()
    iexclude_file: tuple[str, ...] = ()
    exclude_caches: bool = False
    exclude_if_present: tuple[str, ...] = ()
    one_file_system: bool = False

    def empty(self) -> bool:
        return self == ExcludeOptions()


@dataclass
class Excluder:
    """Decides, entry by entry during the walk, what is left out. Built by :func:`build`."""

    patterns: list[Pattern] = field(default_factory=list)
    ipatterns: list[Pattern] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)
    one_file_system: bool = False
    recorded: list[str] = field(default_factory=list)  # what the snapshot record lists as its excludes
    warnings: list[str] = field(default_factory=list)

    def by_name(self, path: str) -> bool:
        """Excluded by a pattern (checked before the entry is even stat'ed, as restic does)."""
        if self.patterns and list_match(self.patterns, path):
            return True
        return bool(self.ipatterns) and list_match(self.ipatterns, path.lower())

    def tagged(self, directory: str) -> set[str]:
        """Tag file names whose presence (with the right header) empties ``directory`` but for themselves."""
        out: set[str] = set()
        for name, header in self.tags:
            tag = os.path.join(directory, name)
            try:
                os.lstat(tag)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.warnings.append(f"could not access exclusion tag file {tag}: {exc.strerror}")
                continue
            if header:
                try:
                    with open(tag, "rb") as f:
                        got = f.read(len(header.encode()))
                except OSError as exc:
                    self.warnings.append(f"could not open exclusion tag file {tag}: {exc.strerror}")
                    continue
                if got != header.encode():
                    what = "too short" if len(got) < len(header.encode()) else "invalid"
                    self.warnings.append(f"{what} signature in exclusion tag file {tag}: not excluded")
                    continue
            out.add(name)
        return out

    def other_device(self, st: os.stat_result, source_dev: int | None) -> str | None:
        """``"skip"`` for an entry on another file system, ``"mountpoint"`` for a directory mounted there."""
        if not self.one_file_system or source_dev is None or st.st_dev == source_dev:
            return None
        return "mountpoint" if stat.S_ISDIR(st.st_mode) else "skip"


def build(opts: ExcludeOptions, env: Mapping[str, str] | None = None) -> Excluder | None:
    """Read exclude files and check every pattern; raises BadPattern or OSError naming the culprit."""
    if opts.empty():
        return None
    plain = list(opts.exclude)
    insensitive = list(opts.iexclude)
    for path in opts.exclude_file:
        plain += _from_file(path, "--exclude-file", env)
    for path in opts.iexclude_file:
        insensitive += _from_file(path, "--iexclude-file", env)
    tags = [parse_tag_spec(s) for s in opts.exclude_if_present]
    if opts.exclude_caches:
        tags.append((CACHEDIR_TAG, CACHEDIR_SIGNATURE))
    return Excluder(patterns=_parse_all(plain, "--exclude"), ipatterns=_parse_all([p.lower() for p in insensitive],
                                                                                 "--iexclude"),
                    tags=tags, one_file_system=opts.one_file_system, recorded=[p for p in plain + insensitive if p])


def _from_file(path: str, flag: str, env: Mapping[str, str] | None) -> list[str]:
    try:
        return read_pattern_file(path, env)
    except OSError as exc:
        raise BadPattern(f"{flag} {path}: {exc.strerror or exc}") from None


def _parse_all(patterns: Iterable[str], flag: str) -> list[Pattern]:
    out = []
    for p in patterns:
        if not p:
            continue  # restic ignores empty patterns
        try:
            out.append(parse(p))
        except BadPattern as exc:
            raise BadPattern(f"{flag}: invalid pattern {p!r}: {exc}") from None
    return out
