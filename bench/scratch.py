"""What the benchmarks on test hosts share: a scratch folder whose test hosts are their own."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from commonstack import testhosts
from commonstack.testhosts.paths import STATE_ENV
from commonstack.testhosts.preflight import require_support


def scratch_folder(prefix: str) -> Path | None:
    """A new folder under /var/tmp holding this run's test host state (never a developer's hosts),
    or None, said on stderr, when this machine cannot start test hosts."""
    try:
        require_support("amd64")
    except testhosts.TestHostError as error:
        print(f"cannot benchmark here: {error}", file=sys.stderr)
        return None
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.environ[STATE_ENV] = str(scratch / "state")
    return scratch
