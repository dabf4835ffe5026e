"""A Raspberry Pi for real: the chat preset deployed on an arm64 Debian 12 test host and checked.

The host is emulated (qemu-user through binfmt_misc), several times slower than a real Pi 4, so
this is one test on one host that deploys once, runs every health check, and plans again to find
nothing to change. Synapse comes from its pinned aarch64 wheel (hash checked by pip), PostgreSQL,
Caddy and coturn from Debian's arm64 packages. The emulation drop-in of the test host
(testhosts/personalize.py) relaxes what qemu-user cannot give a service; it is never deployed to
a real host. Needs root (test hosts), qemu-user-static, and PyPI through the controller's CA.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from commonstack import testhosts
from tests.integration.conftest import new_host_name
from tests.integration.stacks import cli, failed_checks, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.slowest]

GROUP = "pi"
DEPLOY_TIMEOUT = 90 * 60  # seconds: 31 min were not enough on 2 busy cores


def test_chat_on_an_arm64_host(testhosts_state: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    host = testhosts.up(new_host_name(), arch="arm64", memory="2G", trust_controller_ca=True)
    try:
        booted = time.monotonic()
        overrides = {"domain": "pi.test", "admin_email": "admin@pi.test"}
        write_group(tmp_path, GROUP, "chat", {"server": host}, overrides, memory_mb=2048)
        # Emulated package installs and pip: far longer than the other deploys (see the report).
        deployed = cli(tmp_path, "deploy", GROUP, "--yes", "--no-check", timeout=DEPLOY_TIMEOUT)
        assert deployed.returncode == 0, f"deploy failed:\n{deployed.stdout}\n{deployed.stderr}"
        assert "server [bookworm, 2048 MB, arm64]: changed" in deployed.stdout, deployed.stdout
        deployed_at = time.monotonic()

        checked = cli(tmp_path, "check", GROUP, "--json", timeout=DEPLOY_TIMEOUT)
        results = json.loads(checked.stdout)
        assert not failed_checks(results), "\n".join(failed_checks(results))
        checked = {r["layer"] for r in results if r["outcome"] == "passed"}
        assert {"base", "postgres", "caddy", "synapse", "coturn"} <= checked, checked
        checked_at = time.monotonic()

        again = cli(tmp_path, "plan", GROUP)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "server [bookworm, 2048 MB, arm64]: unchanged" in again.stdout, again.stdout
    finally:
        testhosts.down(host.name)
    print(f"\narm64 chat: boot {booted - started:.0f} s, deploy {deployed_at - booted:.0f} s, "
          f"check {checked_at - deployed_at:.0f} s, plan {time.monotonic() - checked_at:.0f} s")
