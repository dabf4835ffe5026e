"""A rendered file that its tool can check is checked on the host before it is used: the sudoers
drop-in goes through visudo before it reaches /etc/sudoers.d, where a broken one would break sudo.

The profile's grammars keep a bad admin user out of the rendering, so the broken drop-in here is a
STAND-IN for a value that got through anyway: the deploy runs in a subprocess whose renderer
writes a syntax error into the sudoers file, as a bug in a template or a filter could.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from commonstack import testhosts
from tests.integration.conftest import new_host_name
from tests.integration.stacks import cli, deploy, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUDOERS = "/etc/sudoers.d/commonstack-admin"
STAGED = "/var/lib/commonstack/sudoers-commonstack-admin"
BROKEN = "admin ALL=(ALL:ALL NOPASSWD ALL\n"  # a missing ')' and ':'
# `commonstack deploy` with a renderer that breaks the sudoers drop-in (see the module docstring).
BREAKING_DEPLOY = f"""
import dataclasses, sys
import commonstack.plan as plan
render_layer = plan.render_layer
plan.render_layer = lambda layer, context: [
    dataclasses.replace(f, content={BROKEN!r}) if f.path == {SUDOERS!r} else f for f in render_layer(layer, context)]
from commonstack.cli import main
sys.argv = ["commonstack", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def based(testhosts_state, tmp_path_factory):
    """A chat group on a fresh host, its base layer deployed once."""
    host = testhosts.up(new_host_name(), suite="bookworm", memory="1G")
    inventories = tmp_path_factory.mktemp("inventories")
    write_group(inventories, "safe", "chat", {"server": host})
    first = deploy(inventories, "safe", "--only", "base", "--no-check")
    yield {"inventories": inventories, "host": host, "first": first}
    testhosts.down(host.name)


def test_the_sudoers_drop_in_is_checked_by_visudo_before_it_is_used(based, testhost_ssh):
    assert "Check the sudoers drop-in with visudo before it is used" in based["first"].stdout
    on_host = testhost_ssh(based["host"], f"cat {SUDOERS}; cmp {SUDOERS} {STAGED} && visudo -c")
    assert on_host.returncode == 0, on_host.stderr
    assert "admin ALL=(ALL:ALL) NOPASSWD: ALL" in on_host.stdout


def test_a_broken_drop_in_is_refused_on_the_host_and_the_working_one_is_kept(based, testhost_ssh):
    env_inventories = str(based["inventories"])
    broken = subprocess.run(
        [sys.executable, "-c", BREAKING_DEPLOY, "deploy", "safe", "--yes", "--only", "base", "--no-check"],
        capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
        env={**__import__("os").environ, "COMMONSTACK_INVENTORIES": env_inventories},
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "server" in broken.stdout and "failed" in broken.stdout
    assert "visudo" in broken.stdout, broken.stdout
    on_host = testhost_ssh(based["host"], f"cat {SUDOERS}; test ! -e {STAGED} && visudo -c && runuser -u admin -- sudo -n true")
    assert on_host.returncode == 0, on_host.stdout + on_host.stderr
    assert "admin ALL=(ALL:ALL) NOPASSWD: ALL" in on_host.stdout and "NOPASSWD ALL\n" not in on_host.stdout
    # The next deploy with the kit's own renderer checks the drop-in again and converges.
    again = deploy(based["inventories"], "safe", "--only", "base", "--no-check")
    assert "Check the sudoers drop-in with visudo before it is used" in again.stdout
    settled = cli(based["inventories"], "plan", "safe", "--only", "base")
    assert settled.returncode == 0 and ": unchanged — 0 of" in settled.stdout, settled.stdout
