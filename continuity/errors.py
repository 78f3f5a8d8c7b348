"""Exit codes and the exception types that carry them.

Scripts written against restic keep working against us, so the CLI maps every
failure to restic's exit-code convention. Core code raises these exceptions;
only the CLI turns them into process exit codes and human messages.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    REPO_MISSING = 10
    REPO_LOCKED = 11
    WRONG_KEY = 12
    INTERRUPTED = 130


class ContinuityError(Exception):
    """A failure the user should see as one clear line, never a traceback."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(ContinuityError):
    exit_code = ExitCode.USAGE


class ConfigError(ContinuityError):
    """A mistake in an ops/ file: names the file, line and key path so it can be fixed in one go."""

    exit_code = ExitCode.USAGE

    def __init__(self, file: str, line: int | None, key_path: str, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.key_path = key_path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        path = f" {self.key_path}:" if self.key_path else ""
        return f"{where}:{path} {self.message}"


class RepositoryMissing(ContinuityError):
    exit_code = ExitCode.REPO_MISSING


class RepositoryLocked(ContinuityError):
    exit_code = ExitCode.REPO_LOCKED


class WrongKey(ContinuityError):
    exit_code = ExitCode.WRONG_KEY


class PartialFailure(ContinuityError):
    exit_code = ExitCode.PARTIAL
