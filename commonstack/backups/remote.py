"""Commands on a group's hosts over SSH, strict about host keys, their output streamed as it comes.

The same ssh_config as the health checks (one alias per host, its pinned key, key-only login),
with one shared connection per host for the many short commands of a restore.
"""

from __future__ import annotations

import selectors
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from commonstack.inventories.openssh import ssh_config
from commonstack.errors import CommonstackError
from commonstack.inventories.targets import HostTarget
from commonstack.stacks.paths import BACKUP_SCRIPT


class HostCommandFailed(CommonstackError):
    """A command on a host failed: the host's fault, not the volunteer's input."""

    exit_code = 1


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def reason(self) -> str:
        """The last "error: ..." line the command said on stderr (else its last line), without the prefix."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        return (errors or lines or [f"exit status {self.returncode}"])[-1].removeprefix("error: ")


class HostShell:
    """`with HostShell(targets) as shell: shell.run("server", "uptime")`."""

    def __init__(self, targets: list[HostTarget]):
        self.targets = {t.name: t for t in targets}
        self._folder = tempfile.TemporaryDirectory(prefix="commonstack-ssh-")
        self.config = Path(self._folder.name) / "ssh_config"
        self.config.write_text(ssh_config(targets, control_dir=Path(self._folder.name)))

    def __enter__(self) -> HostShell:
        return self

    def __exit__(self, *exc) -> None:
        for name in self.targets:
            subprocess.run(["ssh", "-F", str(self.config), "-O", "exit", name], capture_output=True)
        self._folder.cleanup()

    def run(self, host: str, command: str, on_line: Callable[[str], None] | None = None) -> Completed:
        """Run `command` (as root: through `sudo -n` for another user); each line of its output
        goes to `on_line` as it arrives."""
        if self.targets[host].user != "root":
            command = f"sudo -n sh -c {shlex.quote(command)}"
        process = subprocess.Popen(
            ["ssh", "-F", str(self.config), host, command],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        captured: dict[str, list[str]] = {"stdout": [], "stderr": []}
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, "stdout")
            selector.register(process.stderr, selectors.EVENT_READ, "stderr")
            open_streams = 2
            while open_streams:
                for key, _ in selector.select():
                    line = key.fileobj.readline()
                    if not line:
                        selector.unregister(key.fileobj)
                        open_streams -= 1
                        continue
                    captured[key.data].append(line)
                    if on_line:
                        on_line(line.rstrip("\n"))
        process.wait()
        return Completed(process.returncode, "".join(captured["stdout"]), "".join(captured["stderr"]))

    def script(self, host: str, *arguments: str, on_line: Callable[[str], None] | None = None) -> Completed:
        """The host's backup script; a failure raises with the one line it gave."""
        done = self.run(host, " ".join([BACKUP_SCRIPT, *map(shlex.quote, arguments)]), on_line)
        if done.returncode == 255 and not done.stderr.startswith("error:"):
            raise HostCommandFailed(f"{host}: cannot connect: {done.reason}")
        if done.returncode == 127 or "No such file or directory" in done.stderr and BACKUP_SCRIPT in done.stderr:
            raise HostCommandFailed(
                f"{host}: backups are not deployed there yet: `commonstack deploy` installs them "
                "(with backup.enabled: true in stack.yaml)"
            )
        if done.returncode != 0:
            raise HostCommandFailed(f"{host}: {done.reason}")
        return done
