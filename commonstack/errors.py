"""The kit's own errors: each renders as one line that names the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path


class CommonstackError(Exception):
    """An error the volunteer can act on; the CLI prints it without a traceback (exit 2)."""

    exit_code = 2


class ProfileError(CommonstackError):
    """A stack profile that cannot be used as written."""

    def __init__(self, file: Path | str, message: str, key: str | None = None, line: int | None = None):
        message = " ".join(message.split())  # one line, whatever a parser put in it
        self.file, self.key, self.line, self.message = str(file), key, line, message
        where = self.file + (f":{line}" if line else "")
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class SecretsError(CommonstackError):
    """The group's secrets file is missing a value or cannot be trusted."""


class GroupError(CommonstackError):
    """A group folder that does not exist, or exists when it should not."""


class HostError(CommonstackError):
    """A host that cannot be reached or does not answer as it should: its fault, not the input's."""

    exit_code = 1
