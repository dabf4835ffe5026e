"""A real pseudo-terminal for the CLI's prompts (init asks on a terminal, hidden where it must)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path


class Terminal:
    """`commonstack ARGS...` on a pseudo-terminal of its own (its controlling terminal, so that a
    hidden prompt really hides): wait for a prompt, type an answer."""

    def __init__(self, inventories: Path, *args: str):
        env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories), TERM="dumb")
        self.fd, terminal = os.openpty()
        # setsid --ctty: a new session whose controlling terminal is this one (no fork in this
        # multi-threaded process: pty.fork() is deprecated there).
        self.process = subprocess.Popen(
            ["setsid", "--ctty", "--wait", sys.executable, "-m", "commonstack", *args],
            stdin=terminal, stdout=terminal, stderr=terminal, env=env,
        )
        os.close(terminal)
        self.seen = b""
        self.transcript = b""

    def read(self, what: str) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], 20)
        assert ready, f"{what}; the terminal shows {(self.transcript + self.seen).decode(errors='replace')!r}"
        chunk = os.read(self.fd, 1024)
        self.seen += chunk
        return chunk

    def answer(self, prompt: str, reply: str) -> None:
        while prompt.encode() not in self.seen:
            self.read(f"no prompt {prompt!r}")
        end = self.seen.index(prompt.encode()) + len(prompt)
        self.transcript += self.seen[:end]
        self.seen = self.seen[end:]
        os.write(self.fd, reply.encode() + b"\r")

    def finish(self) -> tuple[int, str]:
        while True:  # until the child exits; a prompt left unanswered fails, not hangs
            try:
                if not self.read("commonstack still waits"):
                    break
            except OSError:  # EIO: the terminal's other end is closed
                break
        os.close(self.fd)
        return self.process.wait(timeout=20), (self.transcript + self.seen).decode(errors="replace")
