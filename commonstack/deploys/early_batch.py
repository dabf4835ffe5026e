"""A host's remembered fact batch sent as `plan` or `deploy` starts, while pyinfra loads.

Loading pyinfra and the deploys costs the controller about half a second; a host's batch
(fact_memory.py, prefetch.py) is a round trip and a few tenths of the host's time. Sent first,
over OpenSSH, the batch runs on the host meanwhile, and its answer is in when the plan asks for it.

The batch is the one the host's last plan built and remembered: the command line (pyinfra's, for
`sh`) and the script on its stdin. It answers the plan only if this run builds the very same
(`EarlyBatch.answer`), so that the answers are what pyinfra's connection would get. The connection
is the health checks' (inventories/openssh.py): the host's address, port, user, key and pinned
host key, strictly, without ~/.ssh/config. A batch that opened (`opened`) has shown that the host
accepts OpenSSH's connection: the pinned host key, the key, the login and, for a user other than
root, `sudo` without a password. A plan then connects pyinfra only if it sends a command of its
own (runner.py): a no-op plan the batch answers wholly costs each host one SSH session. Anything
else takes the usual way, through pyinfra:
- a batch whose connection is still not open `CONNECT_GRACE` after the plan asks for it is
  stopped (a host reachable only through ~/.ssh/config, say: no waiting out ssh's timeout);
- one that fails (a connection lost, a host key that does not match).
Nothing here imports pyinfra (or patches gevent): it runs before they load.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from commonstack.deploys import fact_memory
from commonstack.inventories.openssh import ssh_config
from commonstack.inventories.targets import HostTarget, host_targets

log = logging.getLogger(__name__)

# What the batch prints around its own output: that the connection opened (and sudo works, for a
# user other than root), and the script's status.
STARTED = "commonstack: batch started"
ENDED = "commonstack: batch ended "
_ENDED_AT_END = re.compile(rb"\n" + re.escape(ENDED.encode()) + rb"(\d+)\n\Z")
# Seconds a batch whose connection is not open yet may still take to open it, once pyinfra has
# loaded: a login costs several round trips (0.2 s each to a far host) and longer on a loaded
# machine. Only a host whose batch never opens (a password for sudo, a ~/.ssh/config route) pays
# it, once for all hosts.
CONNECT_GRACE = 1.5
POLL = 0.005  # seconds between looks at a batch the plan waits for
EXIT_WAIT = 2  # seconds ssh has to end once the batch ended (its shell removes its files on the way)


@dataclass
class EarlyBatch:
    """One host's batch, sent: `line` running `script` through `process` (ssh), which prints
    into the file `printed` (ssh's own stdout: this side only reads it)."""

    line: str
    script: str
    process: subprocess.Popen
    printed: Path
    is_open: bool | None = None  # known once `opened` has looked

    @classmethod
    def send(cls, connection: list[str], line: str, script: str, files: Path, sudo: bool = False) -> EarlyBatch:
        """Run `line` through `connection` (ssh's command line up to the remote command), `script`
        on its stdin between the lines that say it started and how it ended; `files`: where its
        stdin, stdout and stderr are kept (FILES.sh, FILES.out, FILES.err). With `sudo`, it
        starts only if the user can use sudo without a password (as the runner's preflight asks)."""
        stdin, stdout, stderr = (files.with_suffix(suffix) for suffix in (".sh", ".out", ".err"))
        probe = "sudo -n true </dev/null >/dev/null 2>&1 || exit 1\n" if sudo else ""
        stdin.write_text(f"{probe}echo '{STARTED}'\n{script}echo \"{ENDED}$?\"\n")
        with open(stdin, "rb") as given, open(stdout, "wb") as out, open(stderr, "wb") as err:
            process = subprocess.Popen([*connection, line], stdin=given, stdout=out, stderr=err)
        return cls(line, script, process, stdout)

    def opened(self, until: float, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Whether the batch's connection is open, waiting for it until the `time.monotonic()`
        `until` at most; a batch not open by then is stopped."""
        if self.is_open is None:
            while not self._started() and self.process.poll() is None and time.monotonic() < until:
                sleep(POLL)
            self.is_open = self._started()
            if not self.is_open:
                self.stop()
                self._unused("it did not open in time (connection, host key, login or sudo)")
        return self.is_open

    def answer(self, line: str, script: str, sleep: Callable[[float], None] = time.sleep) -> list[str] | None:
        """The lines the batch printed, if it is `line` running `script` and it succeeded; None
        (the batch stopped) otherwise. `sleep` lets others work meanwhile (gevent's, in a plan).

        Whether it ended, and how, is read from what it printed, not from ssh's exit status:
        once gevent patches subprocess, it reaps every child process, and a process started
        before then reads as ended with status 0."""
        try:
            if (line, script) != (self.line, self.script):
                return self._unused("not the batch the plan makes")
            if not self.opened(time.monotonic() + CONNECT_GRACE, sleep):
                return None
            while not (ended := _ENDED_AT_END.search(self._tail())) and self.process.poll() is None:
                sleep(POLL)
            if not ended or ended[1] != b"0":
                return self._unused("it failed")
            closing = time.monotonic() + EXIT_WAIT
            while self.process.poll() is None and time.monotonic() < closing:
                sleep(POLL)
            return self.printed.read_bytes().decode().split("\n")[1:-2]  # as pyinfra reads lines
        except (OSError, UnicodeDecodeError) as e:
            return self._unused(repr(e))
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _unused(self, why: str) -> None:
        try:
            said = self.printed.with_suffix(".err").read_text(errors="replace").strip()[-300:]
        except OSError:
            said = ""
        log.debug("the fact batch sent early is not used: %s%s", why, f" ({said})" if said else "")

    def _started(self) -> bool:
        with open(self.printed, "rb") as printed:
            return printed.read(len(STARTED) + 1) == STARTED.encode() + b"\n"

    def _tail(self) -> bytes:
        with open(self.printed, "rb") as printed:
            printed.seek(max(0, os.fstat(printed.fileno()).st_size - len(ENDED) - 32))
            return printed.read()


def opened(batches: dict[str, EarlyBatch], sleep: Callable[[float], None] = time.sleep) -> set[str]:
    """The names of the `batches` whose connection is open, waiting `CONNECT_GRACE` at most for
    all of them; the others are stopped."""
    until = time.monotonic() + CONNECT_GRACE
    return {name for name, batch in batches.items() if batch.opened(until, sleep)}


@contextmanager
def early_batches(group, limit: Collection[str], only: Collection[str], purge: bool) -> Iterator[dict[str, EarlyBatch]]:
    """The remembered batches of the group's hosts (those in `limit`, or all) for a plan or deploy
    with these options, sent; each stopped at the end, whether it answered or not. A host
    without one is left out; whatever fails here only leaves it to pyinfra."""
    batches: dict[str, EarlyBatch] = {}
    with tempfile.TemporaryDirectory(prefix="commonstack-batch-") as folder:
        try:
            try:
                memory = fact_memory.of_group(group, deploy=True, only=only, purge=purge, skip_unavailable=False)
                send_remembered(host_targets(group, group.load(), tuple(limit)), memory, Path(folder), batches)
            except Exception as e:  # only a time saver: the plan says what is wrong, if anything is
                log.debug("sending the fact batches early failed: %r", e)
            yield batches
        finally:
            for batch in batches.values():
                batch.stop()


def send_remembered(targets: list[HostTarget], memory: fact_memory.FactMemory, folder: Path,
                    batches: dict[str, EarlyBatch]) -> None:  # fmt: skip
    """Send each target's remembered batch (if `memory` has one) into `batches`, by host name;
    `folder` keeps their files."""
    remembered = {}
    for target in targets:
        if sent := memory.recall_batch(target.name, fact_memory.where(target)):
            remembered[target.name] = (target, sent)
    if not remembered:
        return
    config = folder / "ssh_config"
    config.write_text(ssh_config([target for target, _ in remembered.values()]))
    for index, (name, (target, (line, script))) in enumerate(remembered.items()):
        connection = ["ssh", "-F", str(config), "-T", name]
        batches[name] = EarlyBatch.send(connection, line, script, folder / str(index), sudo=target.user != "root")
