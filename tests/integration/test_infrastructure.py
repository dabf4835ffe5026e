"""Deploying the shared layer for real: base, PostgreSQL, Redis and Caddy on Debian 12 and 13.

One group with two test hosts deployed in parallel by one `commonstack deploy`: a bookworm
host carries Matrix's database and site, a trixie host Nextcloud's (only the infrastructure
layers are deployed here: --only), so the hosts' operation lists differ on purpose.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest
import yaml

from commonstack import testhosts
from tests.integration.conftest import new_host_name
from tests.integration.stacks import cli, deploy, failed_checks, check_results, write_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INFRA = ("--only", "base", "--only", "postgres", "--only", "redis", "--only", "caddy")


@pytest.fixture(scope="module")
def infra(testhosts_state, tmp_path_factory):
    """The group 'infra' on two fresh hosts, deployed once for the whole module."""
    hosts = {
        "vps": testhosts.up(new_host_name(), suite="bookworm", memory="2G"),
        "home": testhosts.up(new_host_name(), suite="trixie", memory="2G"),
    }
    inventories = tmp_path_factory.mktemp("inventories")
    write_group(inventories, "infra", "small-group", hosts, overrides={"nextcloud": {"host": "home"}})
    started = time.monotonic()
    first = deploy(inventories, "infra", *INFRA)
    yield {"inventories": inventories, "hosts": hosts, "first": first, "seconds": time.monotonic() - started}
    for host in hosts.values():
        testhosts.down(host.name)


def summary(output: str, host: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith(f"{host} ["))
    return line


def test_first_deploy_converges_both_releases_in_parallel(infra):
    output = infra["first"].stdout
    assert re.search(r"^vps \[bookworm, 2048 MB, amd64\]: changed", output, re.M), output
    assert re.search(r"^home \[trixie, 2048 MB, amd64\]: changed", output, re.M), output
    # Each host got the layers its services need, and says what this run left out.
    assert "PostgreSQL | Database synapse" in output and "PostgreSQL | Database nextcloud" in output
    assert "Redis | Install Redis" in output


def test_postgresql_started_once_in_its_sandbox_with_its_settings(infra, testhost_ssh):
    """Its settings and sandbox were written before Debian's package created and started the
    cluster (Layer.first_start): they held from that first start, and no restart followed
    (Debian's pg_ctlcluster takes 2 s a start)."""
    script = (
        "grep -c 'ready to accept connections' /var/log/postgresql/postgresql-*-main.log; "
        "runuser -u postgres -- psql -XAtc 'SHOW shared_buffers'; "
        "sed -n 's/^shared_buffers = //p' /etc/postgresql/*/main/conf.d/50-commonstack.conf; "
        "awk '$5 == \"/\" {print $6}' /proc/$(head -1 /var/lib/postgresql/*/main/postmaster.pid)/mountinfo"
    )
    for name, host in infra["hosts"].items():
        found = testhost_ssh(host, script)
        assert found.returncode == 0, found.stderr
        starts, running, written, root = found.stdout.split()
        assert starts == "1", f"{name}: PostgreSQL started {starts} times"
        assert running == written, f"{name}: shared_buffers {running}, {written} written"
        assert root.startswith("ro,"), f"{name}: the sandbox's read-only system ({root})"


def test_checks_are_green_on_both_hosts(infra):
    results = check_results(infra["inventories"], "infra", *INFRA)
    assert not failed_checks(results)
    ran = {(r["host"], r["layer"]) for r in results if r["outcome"] == "passed"}
    assert {("vps", "base"), ("vps", "postgres"), ("vps", "caddy"), ("home", "redis"), ("home", "postgres")} <= ran


def test_second_deploy_changes_nothing(infra):
    result = cli(infra["inventories"], "plan", "infra", *INFRA)
    assert result.returncode == 0, result.stderr
    for host in ("vps", "home"):
        assert re.search(r": unchanged — 0 of \d+ operations would change", summary(result.stdout, host))
    again = deploy(infra["inventories"], "infra", *INFRA)
    assert "Nothing to change." in again.stdout


def logged_plan(inventories, **env: str) -> subprocess.CompletedProcess[str]:
    """`commonstack plan` of the group, its debug log (where the facts came from) on stderr."""
    code = "import logging; logging.basicConfig(level=logging.DEBUG); from commonstack.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, "plan", "infra", *INFRA], capture_output=True, text=True,
                          env=dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories), **env), timeout=600)  # fmt: skip


def test_a_re_plan_reads_its_facts_from_the_batches_sent_while_pyinfra_loads(infra, tmp_path):
    """Each host's remembered fact batch, sent over OpenSSH as the command starts (early_batch.py),
    plans it as pyinfra's own connection does."""
    assert cli(infra["inventories"], "plan", "infra", *INFRA).returncode == 0  # the batches remembered
    early = logged_plan(infra["inventories"])
    assert early.returncode == 0, early.stderr
    assert early.stderr.count(", sent early): batch") == 2, early.stderr
    # Without ssh on the PATH (an empty folder) nothing is sent early: pyinfra sends the batches.
    through_pyinfra = logged_plan(infra["inventories"], PATH=str(tmp_path))
    assert through_pyinfra.returncode == 0, through_pyinfra.stderr
    assert ", sent early)" not in through_pyinfra.stderr and through_pyinfra.stderr.count("stage remembered on") == 2
    assert early.stdout == through_pyinfra.stdout and early.stdout.count(" 0 of ") == 2
    assert early.stderr.count("facts read with 1 remote commands") == 2, early.stderr


def test_plan_after_drift_shows_exactly_that_change(infra, testhost_ssh):
    home = infra["hosts"]["home"]
    drifted = testhost_ssh(home, "echo 'maxmemory 1gb' >> /etc/redis/redis.conf")
    assert drifted.returncode == 0
    result = cli(infra["inventories"], "plan", "infra", *INFRA)
    changed = [line.strip() for line in result.stdout.splitlines() if line.startswith("    ") and "|" in line]
    assert changed == ["Redis | Write /etc/redis/redis.conf", "Redis | Restart Redis for the new settings"]
    assert "-maxmemory 1gb" in result.stdout, "the plan shows the diff"
    assert "vps [bookworm, 2048 MB, amd64]: unchanged" in result.stdout
    deploy(infra["inventories"], "infra", *INFRA)
    assert cli(infra["inventories"], "plan", "infra", *INFRA).stdout.count("0 of") == 2


def test_a_port_not_declared_is_closed_from_the_controller(infra, testhost_ssh):
    vps = infra["hosts"]["vps"]
    started = testhost_ssh(vps, "systemd-run --unit stray-listener python3 -m http.server 8888")
    assert started.returncode == 0, started.stderr
    try:
        inside = testhost_ssh(vps, "for i in $(seq 100); do python3 -c \"import urllib.request as u; "
                                   "u.urlopen('http://127.0.0.1:8888')\" 2>/dev/null && exit; sleep 0.2; done; exit 1")
        assert inside.returncode == 0, "the listener answers inside the host"
        with pytest.raises(OSError):
            socket.create_connection((vps.address, 8888), timeout=3).close()
        socket.create_connection((vps.address, 22), timeout=3).close()  # while SSH is open
    finally:
        testhost_ssh(vps, "systemctl stop stray-listener")


def test_secrets_never_appear_in_output(infra):
    secrets = yaml.safe_load((infra["inventories"] / "infra" / "secrets.yaml").read_text())
    output = infra["first"].stdout + infra["first"].stderr
    assert secrets and not [name for name, value in secrets.items() if value in output]


def test_host_key_mismatch_is_refused_with_a_clear_line(infra, tmp_path):
    known_hosts = infra["inventories"] / "infra" / "known_hosts"
    original = known_hosts.read_text()
    other_key = testhosts.known_hosts_line(infra["hosts"]["home"]).split()[1:]
    vps = infra["hosts"]["vps"]
    known_hosts.write_text(original.replace(" ".join(testhosts.known_hosts_line(vps).split()[1:]), " ".join(other_key)))
    try:
        result = cli(infra["inventories"], "deploy", "infra", "--yes", "--host", "vps", *INFRA)
    finally:
        known_hosts.write_text(original)
    assert result.returncode == 1
    line = summary(result.stdout, "vps") if "vps [" in result.stdout else next(
        line for line in result.stdout.splitlines() if line.startswith("vps")
    )
    assert "unreachable" in line and "does not match" in line and "Traceback" not in result.stdout + result.stderr


def test_unreachable_host_is_one_clear_line_and_others_go_on(infra, tmp_path):
    inventories = tmp_path / "inventories"
    hosts = dict(infra["hosts"])
    write_group(inventories, "broken", "small-group", hosts, overrides={"nextcloud": {"host": "home"}})
    stack = inventories / "broken" / "stack.yaml"
    profile = yaml.safe_load(stack.read_text())
    profile["hosts"][0].update(address="127.0.0.1", port=1)  # nothing listens on port 1 of loopback
    stack.write_text(yaml.safe_dump(profile))
    result = cli(inventories, "plan", "broken", *INFRA)
    assert result.returncode == 1
    assert re.search(r"^vps: unreachable — cannot reach vps \(127\.0\.0\.1:1\): connection refused", result.stdout, re.M)
    assert "home [trixie, 2048 MB, amd64]: unchanged" in result.stdout
