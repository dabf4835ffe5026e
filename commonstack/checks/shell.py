"""A testinfra backend that sends a host's commands to a shell kept open on it, not one `ssh` each.

testinfra's `ssh://` backend starts a local shell and an `ssh` client per command, and the host
starts a session and a login shell for it, one after another for the dozens of commands of a
check run. Here each thread that runs commands on a host gets one `ssh HOST LOOP` (over the
run's shared connection, so host keys are checked by OpenSSH exactly as before): the user's
login shell reads each command and runs it in a subshell with no stdin, as `ssh HOST COMMAND`
ran it, so a command costs the host a fork and its own programs, nothing more.

The command's stdout and stderr come back unchanged (binary, no final newline) on the session's
own two streams, each ended by a line holding a token only this shell knows (sent on its stdin,
never on a command line that `ps` could show), the exit status after it on stdout.

Registered as `shell://NAME` (a pytest plugin: `-p commonstack.checks.shell`); the host spec's
`ssh_config` is required, as the runner writes one (runner.py).
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import selectors
import subprocess
import threading
from typing import Any, NoReturn

import testinfra.backend
from testinfra.backend import base
from testinfra.backend.ssh import SshBackend

# Runs on the host, in the user's login shell, builtins only. Reads the token, then commands:
# the lines up to one that is the token. After each: a newline, the token and the exit status on
# stdout; a newline and the token on stderr.
LOOP = r"""
IFS= read -r t || exit 1
printf '\n%s ready\n' "$t"; printf '\n%s\n' "$t" >&2
while :; do
  c= e=1
  while IFS= read -r l; do
    if [ "$l" = "$t" ]; then e=0; break; fi
    c="$c$l
"
  done
  [ "$e" = 0 ] || exit 0
  ( eval "$c" ) </dev/null
  r=$?
  printf '\n%s %s\n' "$t" "$r"; printf '\n%s\n' "$t" >&2
done
"""


class Shell:
    """One `ssh HOST LOOP`."""

    def __init__(self, ssh_config: str, name: str):
        self.token = secrets.token_hex(16).encode()
        self.process = subprocess.Popen(["ssh", "-F", ssh_config, name, LOOP],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self._ends = (re.compile(rb"\n" + self.token + rb" (\w+)\n"), re.compile(rb"\n" + self.token + rb"()\n"))
        self._send(self.token + b"\n", b"")
        # What a login shell's start-up files print before the loop starts is dropped.
        self._answer(b"")

    def run(self, command: bytes) -> tuple[int, bytes, bytes]:
        self._send(command + b"\n" + self.token + b"\n", command)
        status, stdout, stderr = self._answer(command)
        return int(status), stdout, stderr

    def _send(self, data: bytes, command: bytes) -> None:
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except BrokenPipeError:
            self._lost(command, b"")

    def _answer(self, command: bytes) -> tuple[bytes, bytes, bytes]:
        """Read both streams up to their ends: (what follows the token on stdout, stdout, stderr)."""
        streams = {self.process.stdout.fileno(): 0, self.process.stderr.fileno(): 1}
        data, found = [bytearray(), bytearray()], [None, None]
        with selectors.DefaultSelector() as selector:
            for fd in streams:
                selector.register(fd, selectors.EVENT_READ)
            while None in found:
                for key, _ in selector.select():
                    index = streams[key.fd]
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        self._lost(command, bytes(data[1]))
                    data[index] += chunk
                    # The end is searched for in what came last (and the few bytes before it).
                    found[index] = self._ends[index].search(data[index], max(0, len(data[index]) - len(chunk) - 64))
                    if found[index]:
                        selector.unregister(key.fd)
        return found[0][1], bytes(data[0][: found[0].start()]), bytes(data[1][: found[1].start()])

    def _lost(self, command: bytes, said: bytes) -> NoReturn:
        """The connection ended: an error, as testinfra's ssh backend raises on ssh's exit 255."""
        self.close()
        said = " ".join((said + self.process.stderr.read()).decode(errors="replace").split()) or "no answer"
        running = f" while running `{command.decode(errors='replace')}`" if command else ""
        raise RuntimeError(f"the SSH connection failed{running}: is the host still up? ({said})")

    def end(self) -> None:
        """Let the loop end (at the end of its input), without waiting for it."""
        if self.process.poll() is None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass

    def close(self) -> None:
        self.end()
        if self.process.poll() is None:
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

    def get_encoding(self) -> str:
        # What testinfra would ask the host's Python for (a Python start, 0.02 s of its CPU, at each
        # run where an answer is not all ASCII, as systemd-analyze's marks): on Debian 12 and 13 it
        # says UTF-8 in any locale but a legacy 8-bit one (C or POSIX is taken as UTF-8 since 3.7).
        return "utf-8"

    def close(self) -> None:
        with self._lock:
            shells, self._idle = self._idle, []
        for shell in shells:  # all told first, then waited for: they end side by side
            shell.end()
        for shell in shells:
            shell.close()


testinfra.backend.BACKENDS[ShellBackend.NAME] = f"{__name__}.{ShellBackend.__name__}"
