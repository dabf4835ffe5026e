"""The check runner against a REAL sshd on 127.0.0.1 (no test host needed; see
tests/sshd_fixture.py): pinned keys, one shared connection per host, hosts in parallel through
pytest-xdist, one clear failure for a host that refuses us, and redaction.

"The host" is this machine, so only the shape of the host checks' verdicts is asserted, not
whether this machine's disk or memory is healthy. Skipped, with the reason, when not root or
when openssh-server is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from commonstack.checks import runner
from commonstack.checks.runner import CheckRun, run_checks, start_checks
from commonstack.errors import CommonstackError
from commonstack.inventories.targets import HostTarget
from commonstack.stacks.layers import check_modules
from commonstack.stacks.sizing import debian_arch

try:
    from tests.sshd_fixture import loopback_sshd_fixture
except ModuleNotFoundError:  # the repo root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.sshd_fixture import loopback_sshd_fixture

loopback_sshd = loopback_sshd_fixture(scope="module")

HOST_CHECKS = {
    "every filesystem has free space",
    "memory is available",
    "no process was killed for lack of memory",
    "no systemd unit has failed",
    "security updates run automatically",
    "no reboot is pending",
    "clock is synchronised",
}


def as_host(sshd, name: str, known_hosts: Path | None = None) -> HostTarget:
    return HostTarget(name, sshd.address, sshd.user, sshd.port, sshd.key_path, known_hosts or sshd.known_hosts)


def expectation(name: str) -> dict:
    return {"name": name, "address": "127.0.0.1", "layers": ["base"], "services": [], "firewall_ports": [], "never_public": []}


def test_hosts_run_in_parallel_and_a_refusing_host_is_one_clear_failure(loopback_sshd):
    hosts = [
        as_host(loopback_sshd, "one"),
        as_host(loopback_sshd, "two"),
        as_host(loopback_sshd, "swapped", loopback_sshd.other_known_hosts()),
    ]
    results = run_checks(hosts, {h.name: expectation(h.name) for h in hosts}, modules=("host",))

    refused = [r for r in results if r.host == "swapped"]
    assert len(refused) == 1, refused
    assert (refused[0].layer, refused[0].check, refused[0].outcome) == ("ssh", "host can be reached", "failed")
    assert "Host key verification failed" in refused[0].message and "commonstack pin-keys" in refused[0].message
    for name in ("one", "two"):
        verdicts = {r.check: r for r in results if r.host == name}
        assert set(verdicts) == HOST_CHECKS
        assert all(r.layer == "base" and r.outcome in ("passed", "failed", "skipped") for r in verdicts.values())
        assert all("\n" not in r.message and "CommandResult" not in r.message for r in verdicts.values())
        assert not [r for r in verdicts.values() if "Error" in r.message], "every check ran: none broke on its expectations"
        assert all(r.seconds >= 0 for r in verdicts.values()) and any(r.seconds > 0 for r in verdicts.values())
    # In the modules' own order, host by host.
    assert [r.host for r in results] == ["swapped"] + ["one"] * 7 + ["two"] * 7
    assert [r.check for r in results if r.host == "one"][0] == "every filesystem has free space"


def test_messages_never_show_a_secret(loopback_sshd):
    swapped = as_host(loopback_sshd, "swapped", loopback_sshd.other_known_hosts())
    results = run_checks([swapped], {"swapped": expectation("swapped")}, modules=("host",),
                         secrets=["verification"])  # fmt: skip
    assert "Host key ******** failed" in results[0].message


def test_checks_start_before_their_expectations_and_wait_for_them(loopback_sshd):
    hosts = [as_host(loopback_sshd, "one"), as_host(loopback_sshd, "two")]
    started = start_checks(hosts, modules=("host",))
    time.sleep(1)  # the caller reads facts meanwhile; pytest waits for the expectations
    assert started.process.poll() is None
    results = started.finish({"one": expectation("one")})  # "two" could not be planned: left out
    assert {r.host for r in results} == {"one"}
    assert {r.check for r in results} == HOST_CHECKS


def test_pytest_starts_before_the_hosts_are_named(loopback_sshd):
    """`commonstack check` starts pytest before it loads the profile: it waits, importing, for
    the hosts and modules, then runs them."""
    with CheckRun() as run:
        time.sleep(1)  # the caller loads the profile meanwhile
        assert run.process.poll() is None, "pytest did not wait for its command line"
        run.begin([as_host(loopback_sshd, "one")], ("host",), {}, [])
        results = run.finish({"one": expectation("one")})
    assert {r.check for r in results} == HOST_CHECKS


def test_a_run_given_up_before_its_hosts_are_named_leaves_nothing_running():
    with CheckRun() as run:
        pytest_process = run.process
    assert pytest_process.poll() is not None and pytest_process.stdin.closed
    assert not run.folder.exists()


def test_finishing_a_run_whose_hosts_were_never_named_is_an_error_not_a_wait():
    run = CheckRun()
    with pytest.raises(RuntimeError, match="before begin"):
        run.finish({"one": expectation("one")})
    assert run.process.poll() is not None and not run.folder.exists()


def test_the_runner_starts_pytest_before_the_profile_models_are_imported():
    """The CLI imports the runner and starts pytest first: the models (pydantic) load meanwhile."""
    code = "import sys; import commonstack.checks.runner; print(sorted(m for m in ('pydantic', 'pytest') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_pytest_started_ahead_ends_when_no_command_line_comes():
    ended = subprocess.run([sys.executable, "-m", runner.LAUNCHER], input=b"", capture_output=True, timeout=60)
    assert (ended.returncode, ended.stdout, ended.stderr) == (0, b"", b"")


def test_pytest_started_ahead_imports_no_module_whose_asserts_pytest_rewrites():
    """Imported before pytest runs, a plugin, conftest.py or a check module would keep its plain
    asserts: a failed check would no longer say what it compared."""
    imported = subprocess.run(
        [sys.executable, "-c", "import sys; from commonstack.checks import launch; launch.import_ahead(); print(*sys.modules)"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert "pytest" in imported and "commonstack.checks.probes" in imported
    rewritten = {*runner.PLUGINS, runner.PARALLEL_PLUGIN, "commonstack.checks.conftest"}
    rewritten |= {f"commonstack.checks.{module}" for module in check_modules()}
    assert not rewritten & set(imported)


def test_pytest_started_ahead_warns_of_no_plugin_imported_too_soon(tmp_path):
    """The checks' own command line, plugins included, through launch.py: pytest never warns that
    a plugin was imported too soon to have its asserts rewritten, and runs a test as usual."""
    (tmp_path / "test_compare.py").write_text("def test_compare():\n    found = 1\n    assert found == 2\n")
    arguments = runner.pytest_arguments(tmp_path / "ssh_config", [], ())
    arguments[arguments.index(f"--rootdir={runner.CHECKS_DIR}")] = f"--rootdir={tmp_path}"
    arguments = [a for a in arguments if not a.startswith("--hosts=")] + [str(tmp_path / "test_compare.py")]
    ran = subprocess.run([sys.executable, "-m", runner.LAUNCHER], input=json.dumps(arguments).encode(), capture_output=True,
                         timeout=120, env=dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))  # fmt: skip
    said = ran.stdout.decode()
    assert ran.returncode == 1 and "assert 1 == 2" in said, said
    assert "PytestAssertRewriteWarning" not in said and "cannot be rewritten" not in said, said


def test_base_checks_run_last_as_they_wait_longest():
    assert runner.run_order(("base", "host", "postgres", "synapse")) == ["host", "postgres", "synapse", "base"]
    assert runner.run_order(("host", "redis")) == ["host", "redis"]


def test_verdicts_keep_the_modules_order_though_base_runs_last(loopback_sshd):
    """This machine is no deployed host and the expectations lack most of what base's checks read:
    only the order of the verdicts is asserted."""
    results = run_checks([as_host(loopback_sshd, "one")], {"one": expectation("one")}, modules=("base", "host"))
    base = [r.check for r in results[:-len(HOST_CHECKS)]]
    assert "firewall is active and denies by default" == base[0] and "no service runs a replaced library" in base
    assert {r.check for r in results[-len(HOST_CHECKS):]} == HOST_CHECKS


def test_a_run_given_up_before_its_expectations_leaves_nothing_running(loopback_sshd):
    with start_checks([as_host(loopback_sshd, "one")], modules=("host",)) as started:
        pytest_process = started.process
    assert pytest_process.poll() is not None
    assert not started.folder.exists()


@pytest.fixture
def slow_to_end(tmp_path, monkeypatch) -> str:
    """pytest's options for a plugin that keeps pytest a minute in its teardown."""
    (tmp_path / "slow_to_end.py").write_text("import time\n\n\ndef pytest_unconfigure(config):\n    time.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return "-p slow_to_end"


def test_verdicts_are_read_without_waiting_for_pytest_to_end(loopback_sshd, slow_to_end, monkeypatch):
    monkeypatch.setenv("PYTEST_ADDOPTS", slow_to_end)
    began = time.monotonic()
    with start_checks([as_host(loopback_sshd, "one")], modules=("host",)) as run:
        results = run.finish({"one": expectation("one")})
    assert {r.check for r in results} == HOST_CHECKS
    assert time.monotonic() - began < 30, "the runner waited for pytest's own teardown"


def test_a_pytest_with_no_verdict_that_does_not_end_is_stopped(loopback_sshd, slow_to_end, monkeypatch):
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{slow_to_end} commonstack_no_such_checks.py")
    monkeypatch.setattr(runner, "TEARDOWN_WAIT", 1)
    began = time.monotonic()
    with pytest.raises(CommonstackError, match="the checks could not run"):
        run_checks([as_host(loopback_sshd, "one")], {"one": expectation("one")}, modules=("host",))
    assert time.monotonic() - began < 30


@pytest.mark.parametrize("addopts", ["-p commonstack_no_such_plugin", "commonstack_no_such_checks.py"])
def test_a_pytest_that_gives_no_verdict_is_one_clear_error(loopback_sshd, monkeypatch, addopts):
    """pytest fails to start, or ends its session with no verdict: no results are written (the
    runner takes any results file for every check's verdict), and the runner says why."""
    monkeypatch.setenv("PYTEST_ADDOPTS", addopts)
    with pytest.raises(CommonstackError, match="the checks could not run: .*commonstack_no_such"):
        run_checks([as_host(loopback_sshd, "one")], {"one": expectation("one")}, modules=("host",))


def test_no_shared_connection_outlives_the_run(loopback_sshd, monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="check-runner-", dir="/tmp"))  # short: a socket path's limit
    monkeypatch.setattr(tempfile, "tempdir", str(folder))  # the run's folder (and its sockets) in here
    try:
        results = run_checks([as_host(loopback_sshd, "one")], {"one": expectation("one")}, modules=("host",))
        assert len(results) == len(HOST_CHECKS)
        assert not list(folder.iterdir())
        # `ssh -O exit` returns as the master begins to exit; one left running would live 120 s.
        started = time.monotonic()
        while masters := [pid for pid in os.listdir("/proc") if pid.isdigit() and str(folder).encode() in _cmdline(pid)]:
            assert time.monotonic() - started < 5, "an SSH master connection is still running"
            time.sleep(0.05)
    finally:
        folder.rmdir()


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_check_sizes_the_hosts_it_reached_and_names_the_one_it_could_not(loopback_sshd, tmp_path):
    """`commonstack check`'s way: each connection's first command says what the host is (this
    machine, a Debian the kit supports); a refused host key is the reason its host is not checked."""
    from click.testing import CliRunner

    from commonstack.checks.group import sized_plans
    from commonstack.cli import main
    from commonstack.inventories.groups import Group
    from commonstack.inventories.secrets import current_secrets

    made = CliRunner().invoke(main, ["--inventories", str(tmp_path), "init", "home", "--preset", "split", "--domain",
                                     "home.example.org", "--host", "home=root@192.0.2.10", "--host", "vps=root@192.0.2.11", "--no-email"])  # fmt: skip
    assert made.exit_code == 0, made.output
    group = Group("home", tmp_path)
    profile = group.load()
    hosts = [as_host(loopback_sshd, "home"), as_host(loopback_sshd, "vps", loopback_sshd.other_known_hosts())]
    with start_checks(hosts, ("host",)) as started:
        plans, unusable = sized_plans(group, profile, current_secrets(group.secrets_file, profile), started)
    assert list(plans) == ["home"] and plans["home"].release.facts.arch == debian_arch(os.uname().machine)
    assert list(unusable) == ["vps"] and "Host key verification failed" in unusable["vps"]
