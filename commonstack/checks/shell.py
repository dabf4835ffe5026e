"""A testinfra backend that sends a host's commands to a shell kept open on it, not one `ssh` each.

testinfra's `ssh://` backend starts a local shell and an `ssh` client per command, and the host
starts a session and a login shell for it: about 0.1 s a command, and a check run sends dozens
one after another. Here each thread that runs commands on a host gets one `ssh HOST sh` (over
the run's shared connection, so host keys are checked by OpenSSH exactly as before) that reads
commands, one base64 line each, and answers each with its exit status, then its stdout and
stderr, byte-counted: binary output and output without a final newline come back unchanged.
A command runs as `$SHELL -c COMMAND` (the user's login shell) with no stdin, as it did with `ssh`.

Registered as `shell://NAME` (a pytest plugin: `-p commonstack.checks.shell`); the host spec's
`ssh_config` is required, as the runner writes one (runner.py).
"""

from __future__ import annotations

import atexit
import base64
import subprocess
import threading
from typing import Any, NoReturn

import testinfra.backend
from testinfra.backend import base
from testinfra.backend.ssh import SshBackend

READY = b"commonstack-shell ready\n"
ANSWER = b"commonstack-shell "

# Runs on the host (any POSIX sh). The outputs go to two private files in memory (/dev/shm) where
# there is one, so a full disk does not truncate what a check reads about it.
LOOP = r"""
d=/dev/shm; [ -d "$d" ] && [ -w "$d" ] || d=${TMPDIR:-/tmp}
o=$(mktemp -p "$d") && e=$(mktemp -p "$d") || exit 1
trap 'rm -f "$o" "$e"' EXIT
trap 'exit 1' HUP INT TERM PIPE
echo 'commonstack-shell ready'
while IFS= read -r line; do
  c=$(printf '%s' "$line" | base64 -d)
  "${SHELL:-sh}" -c "$c" </dev/null >"$o" 2>"$e"
  r=$?
  printf 'commonstack-shell %s %s %s\n' "$r" "$(wc -c <"$o")" "$(wc -c <"$e")"
  cat "$o" "$e"
done
"""


class Shell:
    """One `ssh HOST sh` running LOOP."""

    def __init__(self, ssh_config: str, name: str):
        self.process = subprocess.Popen(
            ["ssh", "-F", ssh_config, name, LOOP],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        # A login shell's start-up files may print before the loop starts: skipped.
        while (line := self.process.stdout.readline()) != READY:
            if not line:
                self._lost("")

    def run(self, command: bytes) -> tuple[int, bytes, bytes]:
        try:
            self.process.stdin.write(base64.b64encode(command) + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self._lost(command)
        header = self.process.stdout.readline()
        if not header.startswith(ANSWER):
            self._lost(command)
        status, out_length, err_length = (int(n) for n in header[len(ANSWER) :].split())
        return status, self._read(out_length, command), self._read(err_length, command)

    def _read(self, length: int, command: bytes) -> bytes:
        data = self.process.stdout.read(length)
        if len(data) != length:
            self._lost(command)
        return data

    def _lost(self, command: bytes) -> NoReturn:
        """The connection ended: an error, as testinfra's ssh backend raises on ssh's exit 255."""
        self.close()
        said = " ".join(self.process.stderr.read().decode(errors="replace").split()) or "no answer"
        running = f" while running `{command.decode(errors='replace')}`" if command else ""
        raise RuntimeError(f"the SSH connection failed{running}: is the host still up? ({said})")

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # the loop ends at the end of its input
            except BrokenPipeError:
                pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ShellBackend(SshBackend):
    """testinfra's ssh backend, with a shell per thread kept open (see the module's text)."""

    NAME = "shell"

    def __init__(self, hostspec: str, *args: Any, **kwargs: Any):
        super().__init__(hostspec, *args, **kwargs)
        if not self.ssh_config:
            raise RuntimeError("the shell backend needs an ssh_config (--ssh-config)")
        self._idle: list[Shell] = []
        self._lock = threading.Lock()
        atexit.register(self.close)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        encoded = self.encode(self.get_command(command, *args))
        with self._lock:
            shell = self._idle.pop() if self._idle else None
        try:
            shell = shell or Shell(self.ssh_config, self.host.name)
            status, stdout, stderr = shell.run(encoded)
        except BaseException:
            if shell:
                shell.close()
            raise
        with self._lock:
            self._idle.append(shell)
        return self.result(status, encoded, stdout, stderr)

    def close(self) -> None:
        with self._lock:
            shells, self._idle = self._idle, []
        for shell in shells:
            shell.close()


testinfra.backend.BACKENDS[ShellBackend.NAME] = f"{__name__}.{ShellBackend.__name__}"
