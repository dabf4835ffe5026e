"""pytest, started before its command line is known (run as `python -m commonstack.checks.launch`).

`commonstack check` starts it before loading the group's profile, and writes pytest's command
line (one JSON list, on stdin) once it knows the hosts. Meanwhile this process imports what pytest
and the checks import (0.2 s), so the checks run that much sooner (pytest-xdist's
workers, for several hosts, still import theirs). Without a command line (the caller gave up:
stdin ends) it exits, having run nothing.

Only modules pytest never rewrites the asserts of are imported ahead: the plugins named with
`-p`, conftest.py and the check modules are left to pytest. Imported before, a plugin would only
be warned about; conftest.py or a check module would silently keep its plain asserts, and a
failed check would no longer say what it compared.
"""

from __future__ import annotations

import json
import os
import sys


def import_ahead() -> None:
    """What pytest, its plugins and the checks import, except the modules pytest rewrites."""
    import pytest  # noqa: F401
    import testinfra.backend.ssh  # noqa: F401 (testinfra.plugin's and shell.py's)
    import testinfra.host  # noqa: F401

    # conftest.py's and the check modules'
    from commonstack.checks import expect, exposed_secrets, host_state, matrix_login, probes, runner  # noqa: F401
    from commonstack.stacks import kernel, layers, updates  # noqa: F401


def main() -> None:
    import_ahead()
    line = sys.stdin.readline()
    if not line:
        return
    devnull = os.open(os.devnull, os.O_RDONLY)  # the checks' commands read nothing from the caller
    os.dup2(devnull, 0)
    os.close(devnull)

    import pytest

    sys.exit(pytest.main(json.loads(line)))


if __name__ == "__main__":
    main()
