"""Errors a user can act on. The CLI prints them without a traceback and exits with `exit_code`."""

from __future__ import annotations


class CvpipeError(Exception):
    """A problem with the user's input: names the file/field and says what to do."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []

    def __str__(self) -> str:
        head = super().__str__()
        return "\n".join([head, *("  " + p for p in self.problems)]) if self.problems else head


class ConfigError(CvpipeError):
    """A pipeline YAML that does not validate; one entry in `problems` per problem."""


class DataError(CvpipeError):
    """A dataset that cannot be read (malformed annotation file, path escaping the root, ...)."""


class WeightsError(CvpipeError):
    """A weight file that is missing, has the wrong sha256, or does not fit the architecture."""
