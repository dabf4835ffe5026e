"""pyinfra's log during a run: kept in memory, never on the terminal, and its errors made into one
line per host (used by runner.py).

pyinfra logs command lines, operation arguments (template data may carry secrets) and command
output. For the duration of a run the ``pyinfra`` and ``paramiko`` loggers get
``propagate=False``, level WARNING and a single in-memory handler (any handler configured on
them is detached and restored afterwards).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from .connect import one_line

_PREFIX = re.compile(r"^\[(?P<host>[^\]]+)\]\s*(?:nested\s+)?(?P<message>.*)$", re.DOTALL)
_QUIET_LOGGERS = ("pyinfra", "pyinfra_cli", "paramiko")

SUDO_PROMPT_REFUSED = "sudo asked for a password"
_FACT_FAILED = "Error: could not load fact: "


class Capture(logging.Handler):
    """Keeps pyinfra's warnings/errors in memory, by host, for error lines; prints nothing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.by_host: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            return
        match = _PREFIX.match(message)
        if match:
            self.by_host.setdefault(match["host"].strip(), []).append(match["message"])

    def errors(self, host: str, user: str) -> list[str]:
        """pyinfra's error lines for `host`, cleaned up (last = most recent).

        A failed fact is logged as its output lines followed by "Error: could not load fact:
        NAME args..."; that becomes "could not read NAME: <last output line>" (the arguments,
        which may be a whole command line, are left out). `user` is the login user, named in
        the advice for a sudo password prompt.
        """
        found: list[str] = []
        output: list[str] = []
        for message in (one_line(m) for m in self.by_host.get(host, [])):
            if not message:
                continue
            if message.startswith(_FACT_FAILED):
                fact = (message[len(_FACT_FAILED) :].split() or ["a fact"])[0]
                detail = output[-1] if output else "no output"
                found.append(f"could not read {fact}: {detail}")
                output = []
            elif message.startswith("Error: executed") or message in ("Error", "Error:"):
                output = []
            elif SUDO_PROMPT_REFUSED in message:
                found.append(
                    f"sudo asked for a password — let {user} use sudo without a password "
                    "(NOPASSWD) or connect as root"
                )
            else:
                output.append(message)
                found.append(message)
        return found


@contextmanager
def quiet_logging() -> Iterator[Capture]:
    capture = Capture()
    saved = []
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, list(logger.handlers)))
        logger.handlers = [capture]
        logger.propagate = False
        logger.setLevel(logging.WARNING)
    try:
        yield capture
    finally:
        for logger, level, propagate, handlers in saved:
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)
