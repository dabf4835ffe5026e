"""Where a group's backups go: the restic repository address of the profile, understood.

restic's own spellings (docs: "Preparing a new repository"): a local path (`/srv/restic`,
`local:/srv/restic`: a USB disk on the Pi), SFTP on another machine (`sftp:user@host:/path`,
`sftp://user@host:port//path`) and a rest-server (`rest:https://user:password@host:8000/path`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from commonstack.stacks.reading import excerpt

Kind = Literal["local", "sftp", "rest"]

_SFTP_SHORT = re.compile(r"^sftp:(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s\[\]]+):(?P<path>\S*)$")
_SFTP_URL = re.compile(r"^sftp://(?:(?P<user>[^@/:\s]+)@)?(?P<host>[^@/:\s\[\]]+)(?::(?P<port>\d+))?/(?P<path>\S*)$")


@dataclass(frozen=True)
class Repository:
    address: str  # as restic takes it
    kind: Kind
    server: str | None = None  # sftp: the machine that holds it
    user: str | None = None
    port: int = 22
    path: str | None = None

    @property
    def ssh_target(self) -> str:
        return f"{self.user}@{self.server}" if self.user else str(self.server)


EXPECTED = (
    "a local path (/mnt/usb/restic), sftp:USER@HOST:/PATH (or sftp://USER@HOST:PORT//PATH) or "
    "rest:https://HOST:PORT/PATH"
)


def parse_repository(address: str) -> Repository:
    """The repository an address names; ValueError, saying what is expected, for anything else."""
    if re.match(r"^rest:https?://\S+$", address):
        return Repository(address, "rest")
    if address.startswith("sftp:"):
        match = _SFTP_URL.match(address) or _SFTP_SHORT.match(address)
        if match and match["path"]:
            port = int(match.groupdict().get("port") or 22)
            return Repository(address, "sftp", match["host"], match["user"], port, match["path"])
    path = address.removeprefix("local:")
    if path.startswith("/") and not re.search(r"\s", path):
        return Repository(address, "local", path=path)
    raise ValueError(f"expected {EXPECTED}, got {excerpt(address)}")
