"""Shared by every test: what the kit keeps on this machine (the last check, for the runbook) goes
into a folder of the test session's own, never into the developer's ~/.local/state."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def machine_state(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
        yield
