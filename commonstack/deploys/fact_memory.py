"""The commands that read a host's facts in its last plan or deploy, remembered on this machine, so
that the next one reads them in one batch at once instead of finding them in a discovery pass
first (prefetch.py): a discovery pass costs as much CPU as the real prepare.

Only which commands to run is remembered (and the batch that sends them, so that the next run can
send it before pyinfra loads: early_batch.py), never what they printed: every answer still comes
from the host, at this run. A remembered list that no longer fits (the host or the kit changed since)
costs time, never correctness: a command it lacks is read on its own while preparing, as pyinfra
does, and the list is remembered anew. What makes it unfit is known ahead where it can be: a list
is used only with the same `context` (the kit's code, pyinfra's release, the profile, the command's
options, the host's address), and a deploy or upgrade that changed the host, or a run that failed
on it, forgets all of the host's lists.

A file per host and context under the group's state folder (0600, in a 0700 folder; the newest
`KEPT` of a host stay), written whole or not at all. A command in which a secret appears, even
quoted, is never written. A file that cannot be read or written (a full disk) only means a
discovery pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from commonstack.deploys import PINNED

if TYPE_CHECKING:
    from commonstack.inventories.groups import Group
    from commonstack.inventories.targets import HostTarget

log = logging.getLogger(__name__)

# key (prefetch.command_key) -> (the batch's command line, the condition to run it under or None)
Commands = dict[str, tuple[str, str | None]]
KEPT = 4  # lists per host: this profile's plans and deploys, a sizing's, a few earlier profiles'
# What quoting a secret into a command may escape or split it at (repr, shlex.quote, sudo's sh -c).
_QUOTED_AT = re.compile(r"[\\'\"$`\s]+")


@dataclass(frozen=True)
class FactMemory:
    folder: Path
    context: str  # a digest of what shapes the commands (`context_of`)

    def recall(self, host: str, where: str) -> Commands:
        """The commands remembered for `host` (at `where`, its address) in this context, or none."""
        try:
            commands = {key: (line, guard) for key, line, guard in self._document(host, where)["commands"]}
        except (KeyError, TypeError, ValueError):
            return {}
        texts = [text for key, (line, guard) in commands.items() for text in (key, line, guard or "")]
        return commands if all(isinstance(text, str) for text in texts) else {}

    def recall_batch(self, host: str, where: str) -> tuple[str, str] | None:
        """The (command line, script) of the batch that sends the remembered commands, or None."""
        try:
            line, script = self._document(host, where)["batch"]
        except (KeyError, TypeError, ValueError):
            return None
        return (line, script) if isinstance(line, str) and isinstance(script, str) else None

    def _document(self, host: str, where: str) -> dict:
        """The host's file in this context ({} if there is none, or it is unreadable)."""
        try:
            document = json.loads(self._file(host, where).read_text())
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) and document.get("context") == self._host_context(where) else {}

    def remember(
        self,
        host: str,
        where: str,
        commands: Commands,
        secrets: Collection[str],
        batch: Callable[[Commands], tuple[str, str]] | None = None,
    ) -> None:
        """Keep `commands` (those without a secret) and, with `batch`, the (command line, script)
        it makes of the commands kept."""
        needles = {piece for secret in secrets if secret for piece in _pieces(secret)}
        kept = {
            key: (line, guard)
            for key, (line, guard) in commands.items()
            if not any(needle in text for needle in needles for text in (key, line, guard or ""))
        }
        listed = [[key, line, guard] for key, (line, guard) in kept.items()]
        content = {"context": self._host_context(where), "commands": listed}
        if batch and kept:
            line_and_script = batch(kept)
            if not any(needle in text for needle in needles for text in line_and_script):
                content["batch"] = list(line_and_script)
        document = json.dumps(content)
        temporary = None
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")  # 0600
            with os.fdopen(descriptor, "w") as file:
                file.write(document)
            os.replace(temporary, current := self._file(host, where))
            others = sorted(set(self._files(host)) - {current}, key=lambda path: path.stat().st_mtime)
            for old in others[: max(0, len(others) - (KEPT - 1))]:
                old.unlink()
        except OSError as e:
            log.debug("could not remember the fact commands of %s: %s", host, e)
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)

    def forget(self, host: str) -> None:
        """Every list of `host`: whatever the context, its facts may need other commands now."""
        try:
            for path in self._files(host):
                path.unlink()
        except OSError as e:
            log.debug("could not forget the fact commands of %s: %s", host, e)

    def _file(self, host: str, where: str) -> Path:
        return self.folder / f"{_digest(host)}-{self._host_context(where)[:16]}.json"

    def _files(self, host: str) -> list[Path]:
        return list(self.folder.glob(f"{_digest(host)}-*.json"))

    def _host_context(self, where: str) -> str:
        return hashlib.sha256(f"{self.context}\0{where}".encode()).hexdigest()


def _pieces(secret: str) -> set[str]:
    """The secret, and its parts long enough to give it away where quoting split it."""
    return {secret} | {piece for piece in _QUOTED_AT.split(secret) if len(piece) >= 6}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def of_group(group: Group, deploy: bool, only: Collection[str], purge: bool, skip_unavailable: bool) -> FactMemory:
    """Where each host's fact commands are remembered, for this profile and these options."""
    options = f"deploy={deploy} only={sorted(only)} purge={purge} skip={skip_unavailable}"
    context = context_of([f"pyinfra {PINNED}", options, group.stack_file.read_bytes()])
    return FactMemory(group.state_folder / "fact-commands", context)


def where(target: HostTarget) -> str:
    """A host's address as its remembered commands are kept under."""
    return f"{target.user}@{target.address}:{target.port}"


def context_of(parts: Iterable[str | bytes]) -> str:
    """A digest of `parts` and of the kit's own code and data (any change to them may change the
    commands its operations ask)."""
    digest = hashlib.sha256(_kit_digest())
    for part in parts:
        digest.update(b"\0" + (part if isinstance(part, bytes) else part.encode()))
    return digest.hexdigest()


@cache
def _kit_digest() -> bytes:
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".j2", ".yaml") and path.is_file():
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.digest()
