"""Running the system tools test hosts are made of, with failures as ``TestHostError``."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from .errors import TestHostError


def run(cmd: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    """Run ``cmd``; returns its stdout. A failure names the command and its last error line."""
    # Never wait on a prompt. (gevent's subprocess.run refuses stdin= next to input=, even None.)
    feed = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    result = subprocess.run(list(cmd), capture_output=True, text=True, **feed)
    if check and result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {result.returncode}"
        raise TestHostError(f"{' '.join(cmd[:4])}{' ...' if len(cmd) > 4 else ''} failed: {detail}")
    return result.stdout
