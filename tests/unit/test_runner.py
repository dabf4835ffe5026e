"""The pyinfra runner (commonstack.deploys.runner) against a REAL sshd on 127.0.0.1.

"unit" because no test host is needed: `loopback_sshd` starts /usr/sbin/sshd on a free
loopback port (root login with a throwaway key, host key pinned in a temp known_hosts).
The operations write into pytest's tmp_path, so "the host" is this machine's /tmp.
Skipped, with the reason, when not root or when openssh-server is not installed.

Every runner call happens in a CHILD interpreter (`RunnerChild`, fixture `runner`):
importing the runner monkey-patches gevent for the whole process, which must happen before
anything imports ssl and before any thread starts. A pytest process cannot offer that (its plugins import ssl,
and a pytest-xdist worker's I/O thread dies once `threading` is patched), and the patch
would leak into every other test. The child imports the runner first, then this very file
as a module, and calls plan/apply with one of the module-level operation functions below;
it sends back the results as JSON. Those functions take everything from `host.data`.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.operations import files, server

from commonstack.deploys.configs import changed
from commonstack.deploys.connect import SUDO_PROBE, sudo_problem

REPO = Path(__file__).resolve().parents[2]
try:
    from tests.sshd_fixture import (
        free_port,
        loopback_sshd_fixture,
        make_keypair,
        start_loopback_sshd,
    )
except ModuleNotFoundError:  # the repo root is not on sys.path (no pytest `pythonpath` yet)
    sys.path.insert(0, str(REPO))
    from tests.sshd_fixture import (
        free_port,
        loopback_sshd_fixture,
        make_keypair,
        start_loopback_sshd,
    )

loopback_sshd = loopback_sshd_fixture(scope="module")

SECRET = "s3cr3t-Passw0rd-only-in-template-data"
CONF_TEMPLATE = "# managed by commonstack\nlisten = {{ port }}\npassword = {{ password }}\n"
BOOM = (
    "echo 'migrating...'; echo 'Traceback (most recent call last):' >&2; "
    "echo 'migrate: disk full' >&2; exit 3"
)


# --- running the runner in a child interpreter ----------------------------------------------

RESULT_MARK = "@@COMMONSTACK-RUNNER-RESULT@@"
CHILD = r"""
import json, sys
from commonstack.deploys import runner  # first: monkey-patches gevent
import dataclasses, importlib.util, logging
from pathlib import Path

setup = json.loads(sys.stdin.readline())
sys.path.insert(0, setup["repo"])
if setup["debug_logging"]:  # like a CLI run with --debug: everything on the root logger
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
spec = importlib.util.spec_from_file_location("runner_scenarios", setup["module"])
scenarios = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scenarios)

for line in sys.stdin:
    request = json.loads(line)
    targets = []
    for fields in request["targets"]:
        for key in ("key_path", "known_hosts"):
            if fields.get(key) is not None:
                fields[key] = Path(fields[key])
        targets.append(runner.HostTarget(**fields))
    progress = []
    out = {"progress": progress}
    options = request["options"]
    if "memory" in options:  # (folder, context)
        from commonstack.deploys.fact_memory import FactMemory
        options["memory"] = FactMemory(Path(options["memory"][0]), options["memory"][1])
    if "early" in options:  # a folder: the remembered batches sent first, as the CLI sends them
        import time
        from commonstack.deploys.early_batch import send_remembered
        folder, options["early"] = Path(options["early"]), {}
        folder.mkdir()
        send_remembered(targets, options["memory"], folder, options["early"])
        for _ in range(1000):  # while the CLI loads pyinfra, their connections open
            if all(b._started() for b in options["early"].values()):
                break
            time.sleep(0.01)
    if "standin" in options:  # a folder: each target's remembered batch (or none) run by this machine's sh
        from commonstack.deploys.early_batch import EarlyBatch
        from commonstack.deploys.fact_memory import where
        folder, options["early"] = Path(options.pop("standin")), {}
        folder.mkdir()
        for index, target in enumerate(targets):
            line, script = options["memory"].recall_batch(target.name, where(target)) or ("sh", "")
            options["early"][target.name] = EarlyBatch.send(["sh", "-c"], line, script, folder / str(index))
    try:
        run = getattr(runner, request["mode"])
        operations = getattr(scenarios, request["operations"])
        results = run(targets, operations, progress.append, **options)
        out["results"] = [dataclasses.asdict(r) for r in results]
    except runner.RunnerError as e:
        out["runner_error"] = str(e)
    print(setup["mark"] + json.dumps(out), flush=True)
"""


class RunnerChild:
    """A child interpreter that imports the runner first and then serves plan/apply requests
    (several runs in one process, like a CLI doing plan then deploy)."""

    def __init__(self, debug_logging: bool = False) -> None:
        self.debug_logging = debug_logging
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        self.stderr_path = Path(tempfile.mkstemp(prefix="runner-child-", suffix=".stderr")[1])
        self.stderr_file = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self._send(
            {
                "repo": str(REPO),
                "module": __file__,
                "debug_logging": self.debug_logging,
                "mark": RESULT_MARK,
            }
        )

    def _send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def outcome(
        self, mode, targets, operations, timeout: float = 300, **options
    ) -> SimpleNamespace:
        """``runner.<mode>(targets, operations, progress.append, **options)`` in the child:
        .results (HostResult-like namespaces), .progress, .runner_error and .output
        (everything the child printed meanwhile, stdout + stderr)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        stderr_start = self.stderr_path.stat().st_size
        self._send(
            {
                "mode": mode,
                "targets": targets,
                "operations": operations.__name__,
                "options": options,
            }
        )
        watchdog = threading.Timer(timeout, self.proc.kill)
        watchdog.start()
        printed = []
        try:
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    stderr = self.stderr_path.read_text()[stderr_start:]
                    raise AssertionError(f"the runner child died:\n{''.join(printed)}{stderr}")
                if line.startswith(RESULT_MARK):
                    data = json.loads(line[len(RESULT_MARK) :])
                    break
                printed.append(line)
        finally:
            watchdog.cancel()
        results = [
            SimpleNamespace(
                **{**r, "operations": [SimpleNamespace(**op) for op in r["operations"]]}
            )
            for r in data.get("results", [])
        ]
        return SimpleNamespace(
            results=results,
            progress=data["progress"],
            runner_error=data.get("runner_error"),
            output="".join(printed) + self.stderr_path.read_text()[stderr_start:],
        )

    def plan(self, targets, operations, **options):
        return self.outcome("plan", targets, operations, **options).results

    def apply(self, targets, operations, **options):
        return self.outcome("apply", targets, operations, **options).results

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stderr_file.close()
            self.stderr_path.unlink(missing_ok=True)
            self.proc = None


@pytest.fixture(scope="module")
def runner():
    child = RunnerChild()
    yield child
    child.close()


def ops_by_name(result) -> dict:
    return {op.name: op for op in result.operations}


def site_data(path: Path) -> dict:
    return {"dir": str(path / "site"), "port": 8080, "password": SECRET}


# --- operations (module level: the child imports this file and calls them) -----------------


def site_operations():
    """A tiny deploy: one files.put and one files.template into host.data.dir."""
    site = host.data.dir
    files.put(
        name="Write motd",
        src=StringIO("welcome to the co-op\n"),
        dest=f"{site}/motd",
        mode="644",
    )
    files.template(
        name="Write app config",
        src=StringIO(CONF_TEMPLATE),
        dest=f"{site}/app.conf",
        mode="600",
        port=host.data.port,
        password=host.data.password,
    )


def conditional_restart_operations():
    conf = files.put(
        name="Write config", src=StringIO("a = 1\n"), dest=f"{host.data.dir}/svc.conf", mode="644"
    )
    server.shell(
        name="Restart service",
        commands=[f"echo restarted >> {host.data.dir}/restarted"],
        _if=conf.did_change,
    )


def reload_unless_started_operations():
    site = host.data.dir
    conf = files.put(name="Write config", src=StringIO(host.data.config), dest=f"{site}/svc.conf", mode="644")
    started = files.put(name="Start service", src=StringIO("running\n"), dest=f"{site}/running", mode="644")
    server.shell(
        name="Reload service",
        commands=[f"echo reloaded >> {site}/reloaded"],
        _if=changed([conf], unless=[started]),
    )


def failing_operations():
    site = host.data.dir
    files.put(name="Write motd", src=StringIO("hi\n"), dest=f"{site}/motd", mode="644")
    server.shell(name="Run migration", commands=[host.data.command])
    files.put(name="Write after", src=StringIO("after\n"), dest=f"{site}/after", mode="644")


def sudo_prompt_operations():
    server.shell(name="Needs sudo", commands=["echo 'sudo: a password is required' >&2; exit 1"])


def broken_template_operations():
    files.put(name="Write motd", src=StringIO("hi\n"), dest=f"{host.data.dir}/motd", mode="644")
    files.template(
        name="Write broken config",
        src=StringIO("value = {{ not_given }}\n"),
        dest=f"{host.data.dir}/broken.conf",
        mode="644",
    )


def fact_probe_operations():
    from pyinfra.facts.server import Command

    files.put(name="Write motd", src=StringIO("hi\n"), dest=f"{host.data.dir}/motd", mode="644")
    host.get_fact(Command, host.data.probe)
    server.shell(name="Then this", commands=["true"])


def typo_operations():
    files.put(name="Write motd", src=StringIO("hi\n"), dest=f"{host.data.dir}/motd", mode="644")
    host.data.no_such_key  # noqa: B018 - a typo in a deploy function


def per_host_operations():
    if host.name == "web1":  # web2's first operation then shares an identity with this one
        files.put(name="Only on web1", src=StringIO("1\n"), dest=f"{host.data.dir}/one", mode="644")
    files.put(name="On both", src=StringIO("b\n"), dest=f"{host.data.dir}/{host.name}-both", mode="644")


def secret_operations():
    site_operations()
    server.shell(name="Use the secret", commands=[f"echo {host.data.password} >&2; exit 1"])


def root_owned_file_operations():
    files.put(name="Write as root", src=StringIO("x\n"), dest=f"{host.data.dir}/x", mode="600")


def no_operations():
    pass


class SlowProbe(FactBase):
    """Stands for a fact that reaches beyond the host (a download's HEAD): leaves a mark when run."""

    read_ahead = False

    def command(self, mark):
        return f"echo asked >> {mark}"


def read_when_needed_operations():
    from pyinfra.facts.files import Directory

    if not host.get_fact(Directory, path=host.data.dir):  # a discovery pass reads "no such folder"
        host.get_fact(SlowProbe, mark=f"{host.data.dir}/probed")
    files.put(name="Write motd", src=StringIO("hi\n"), dest=f"{host.data.dir}/motd", mode="644")


def nagle_operations():
    """Records, where the host is connected, whether its SSH socket sends each packet at once."""
    import socket

    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    if transport is not None:  # the stage that runs (a discovery pass connects nothing)
        Path(host.data.dir).mkdir(exist_ok=True)
        Path(host.data.dir, "nodelay").write_text(str(transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
    server.shell(name="Say hello", commands=["true"])


def many_facts_operations():
    """What a layer deploy asks of a host: a group (its fact has a default that breaks the
    operation until known), an account (its fact read through a shortcut, fact_shortcuts.py),
    files (type, then folder and checksum), a folder, a fact with stderr."""
    from pyinfra.facts.server import Command

    server.group(name="Group root", group="root", system=True)
    server.user(name="Account root", user="root")
    for n in range(6):
        files.put(name=f"Write file {n}", src=StringIO(f"{n}\n"), dest=f"{host.data.dir}/f{n}", mode="644")
    files.directory(name="A folder", path=f"{host.data.dir}/sub", mode="755")
    host.get_fact(Command, "echo out; echo err >&2")


def probe_when_needed_operations():
    from pyinfra.facts.files import Directory

    if not host.get_fact(Directory, path=host.data.dir):
        host.get_fact(SlowProbe, mark=host.data.mark)
    files.put(name="Write motd", src=StringIO("hi\n"), dest=host.data.motd, mode="644")


def probing_operations():
    """A fact whose command holds a secret (a redacted value), beside a file's checksum."""
    from pyinfra.facts.server import Command

    files.put(name="Write motd", src=StringIO("hi\n"), dest=f"{host.data.dir}/motd", mode="644")
    host.get_fact(Command, host.data.probe)


def waiting_operations():
    """many_facts_operations, after a wait that lets other greenlets run."""
    import gevent

    gevent.sleep(0.01)
    many_facts_operations()


# --- plan / apply / idempotency / drift -----------------------------------------------------


def test_plan_reports_changes_with_diffs_and_changes_nothing(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data=site_data(tmp_path))

    outcome = runner.outcome("plan", [target], site_operations)

    [result] = outcome.results
    assert result.status == "changed", result
    assert result.error is None
    ops = ops_by_name(result)
    assert list(ops) == ["Write motd", "Write app config"]
    assert all(op.changed and op.host == "web1" for op in ops.values())
    assert "+welcome to the co-op" in ops["Write motd"].diff
    assert "+listen = 8080" in ops["Write app config"].diff
    assert ops["Write app config"].diff.startswith("--- /dev/null\n")
    # Nothing created: not the files, not even the directory files.put would create.
    assert not (tmp_path / "site").exists()
    assert "web1: connected" in outcome.progress
    assert "web1: 2 operations, 2 would change" in outcome.progress


def test_apply_converges_then_second_apply_changes_nothing(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data=site_data(tmp_path))

    [first] = runner.apply([target], site_operations)
    assert first.status == "changed", first
    assert [op.changed for op in first.operations] == [True, True]
    site = tmp_path / "site"
    assert (site / "motd").read_text() == "welcome to the co-op\n"
    assert (site / "app.conf").read_text() == (
        f"# managed by commonstack\nlisten = 8080\npassword = {SECRET}\n"
    )
    assert (site / "app.conf").stat().st_mode & 0o777 == 0o600

    [second] = runner.apply([target], site_operations)
    assert second.status == "unchanged", second
    assert len(second.operations) == 2
    assert [op for op in second.operations if op.changed] == []

    [again] = runner.plan([target], site_operations)
    assert again.status == "unchanged"
    assert [op.diff for op in again.operations] == [None, None]


def test_drift_shows_exactly_that_operation_with_a_diff(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data=site_data(tmp_path))
    runner.apply([target], site_operations)
    motd = tmp_path / "site" / "motd"
    motd.write_text("welcome to the co-op\nhand-edited line\n")

    [result] = runner.plan([target], site_operations)

    assert result.status == "changed"
    changed = [op for op in result.operations if op.changed]
    assert [op.name for op in changed] == ["Write motd"]
    diff = changed[0].diff
    assert "-hand-edited line" in diff
    assert " welcome to the co-op" in diff
    assert f"{motd} (current)" in diff
    assert motd.read_text().endswith("hand-edited line\n")  # plan changed nothing


def test_plan_honours_if_conditions_on_earlier_changes(runner, loopback_sshd, tmp_path):
    """A restart-style step `_if=<config changed>` appears in a plan only when the config
    would change (pyinfra alone reports every server.shell as a change in a plan)."""
    marker = tmp_path / "restarted"
    target = loopback_sshd.target_fields("web1", data={"dir": str(tmp_path)})

    [before] = runner.plan([target], conditional_restart_operations)
    assert {op.name: op.changed for op in before.operations} == {
        "Write config": True,
        "Restart service": True,
    }
    runner.apply([target], conditional_restart_operations)
    assert marker.read_text() == "restarted\n"

    [after] = runner.plan([target], conditional_restart_operations)
    assert after.status == "unchanged", after
    [second] = runner.apply([target], conditional_restart_operations)
    assert second.status == "unchanged", second
    assert marker.read_text() == "restarted\n"


def test_a_reload_is_left_out_after_a_start_that_read_the_change_in_plan_and_deploy(runner, loopback_sshd, tmp_path):
    """`changed(files, unless=[start])`: a service that starts reads its new config itself (Caddy
    would otherwise cut its certificate orders short)."""
    reloaded = tmp_path / "reloaded"

    def target(config: str) -> dict:
        return loopback_sshd.target_fields("web1", data={"dir": str(tmp_path), "config": config})

    [first] = runner.plan([target("a = 1\n")], reload_unless_started_operations)
    assert [op.name for op in first.operations if op.changed] == ["Write config", "Start service"]
    runner.apply([target("a = 1\n")], reload_unless_started_operations)
    assert not reloaded.exists()

    [edited] = runner.plan([target("a = 2\n")], reload_unless_started_operations)
    assert [op.name for op in edited.operations if op.changed] == ["Write config", "Reload service"]
    runner.apply([target("a = 2\n")], reload_unless_started_operations)
    assert reloaded.read_text() == "reloaded\n"


def test_batched_facts_answer_as_one_by_one_in_a_few_remote_commands(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data=site_data(tmp_path))
    runner.apply([target], many_facts_operations)
    (tmp_path / "site" / "f2").write_text("drifted\n")  # one change among unchanged files

    [batched] = runner.plan([target], many_facts_operations)
    [one_by_one] = runner.plan([target], many_facts_operations, batch_facts=False)

    assert batched.status == one_by_one.status == "changed"
    assert [vars(op) for op in batched.operations] == [vars(op) for op in one_by_one.operations]
    assert [op.name for op in batched.operations if op.changed] == ["Write file 2"]
    assert "-drifted" in ops_by_name(batched)["Write file 2"].diff
    assert one_by_one.commands >= 20, one_by_one.commands  # a round trip per fact, as pyinfra reads them
    assert batched.commands <= 4, batched.commands  # the batches, and the changed file's content


def test_hosts_discovered_side_by_side_plan_as_one_by_one_even_when_their_deploy_code_waits(runner, loopback_sshd, tmp_path):
    """Each host's discovery passes and batches run in a greenlet of its own (prefetch.discover),
    and a pass makes its throwaway State pyinfra's current one, which is global: deploy code that
    waits on something (here a sleep) lets another host's pass run meanwhile. The plans are still
    those of facts read one by one."""
    targets = [loopback_sshd.target_fields(f"web{n}", data=site_data(tmp_path / f"web{n}")) for n in range(4)]
    runner.apply(targets, many_facts_operations)
    for n in (1, 3):
        (tmp_path / f"web{n}" / "site" / f"f{n}").write_text("drifted\n")

    batched = runner.plan(targets, waiting_operations)
    one_by_one = runner.plan(targets, waiting_operations, batch_facts=False)

    assert [[vars(op) for op in r.operations] for r in batched] == [[vars(op) for op in r.operations] for r in one_by_one]
    assert [[op.name for op in r.operations if op.changed] for r in batched] == [[], ["Write file 1"], [], ["Write file 3"]]


def test_connections_send_each_packet_at_once(runner, loopback_sshd, tmp_path):
    """paramiko leaves Nagle's algorithm on: each command would wait for the host's delayed
    acknowledgement (about 45 ms). The runner's connections turn it off (TCP_NODELAY)."""
    target = loopback_sshd.target_fields("web1", data=site_data(tmp_path))
    [result] = runner.apply([target], nagle_operations)
    assert result.status in ("changed", "unchanged"), result
    assert int((tmp_path / "site" / "nodelay").read_text()) != 0


def test_a_fact_not_to_read_ahead_is_read_only_when_needed(runner, loopback_sshd, tmp_path):
    tmp_path.joinpath("site").mkdir()
    target = loopback_sshd.target_fields("web1", data=site_data(tmp_path))
    [result] = runner.plan([target], read_when_needed_operations)
    assert result.status == "changed", result
    assert not (tmp_path / "site" / "probed").exists()  # the site exists: never needed, never run


# --- remembered fact commands (fact_memory.py) ------------------------------------------------


def remembered(folder: Path) -> str:
    """The memory's one file (a single host), checked private on the way."""
    [file] = folder.iterdir()
    assert folder.stat().st_mode & 0o777 == 0o700 and file.stat().st_mode & 0o777 == 0o600
    return file.read_text()


def applied_and_remembered(runner, sshd, tmp_path, remembered_for=None) -> tuple[dict, tuple[str, str]]:
    """A site applied, then planned (with `remembered_for`, or the same operations) with a memory,
    which remembers the commands its facts were read with: (the target, the memory)."""
    target = sshd.target_fields("web1", data=site_data(tmp_path))
    memory = (str(tmp_path / "memory"), "context")
    runner.apply([target], many_facts_operations)
    runner.plan([target], remembered_for or many_facts_operations, memory=memory)
    return target, memory


def test_remembered_fact_commands_run_in_one_batch_and_plan_the_same(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data=site_data(tmp_path))
    memory = (str(tmp_path / "memory"), "context")
    runner.apply([target], many_facts_operations)

    [found] = runner.plan([target], many_facts_operations, memory=memory)
    (tmp_path / "site" / "f2").write_text("drifted\n")  # after the commands were remembered
    [again] = runner.plan([target], many_facts_operations, memory=memory)
    [one_by_one] = runner.plan([target], many_facts_operations, batch_facts=False)

    assert found.status == "unchanged" and found.commands == 2, found  # discovery: its two batches
    assert [vars(op) for op in again.operations] == [vars(op) for op in one_by_one.operations]
    assert [op.name for op in again.operations if op.changed] == ["Write file 2"]
    assert again.commands == 2, again.commands  # no discovery pass: the batch, and f2's content
    assert "sha1sum" in remembered(tmp_path / "memory")


def test_no_secret_is_remembered(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data={**site_data(tmp_path), "probe": f"echo {SECRET}"})
    memory = (str(tmp_path / "memory"), "context")
    runner.plan([target], probing_operations, memory=memory, redact=[SECRET])
    text = remembered(tmp_path / "memory")
    assert "/motd" in text and SECRET not in text


def test_a_deploy_that_changes_a_host_or_fails_on_it_forgets_its_commands(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data={**site_data(tmp_path), "command": "true"})
    memory = (str(tmp_path / "memory"), "context")
    runner.plan([target], many_facts_operations, memory=memory)
    assert remembered(tmp_path / "memory")
    [changed] = runner.apply([target], many_facts_operations, memory=memory)
    assert changed.status == "changed" and not list((tmp_path / "memory").iterdir())

    [unchanged] = runner.apply([target], many_facts_operations, memory=memory)
    assert unchanged.status == "unchanged" and remembered(tmp_path / "memory")
    [planned] = runner.plan([target], many_facts_operations, memory=memory)
    assert planned.commands == 1, planned.commands

    target["data"]["command"] = BOOM
    [failed] = runner.apply([target], failing_operations, memory=memory)
    assert failed.status == "failed" and not list((tmp_path / "memory").iterdir())


def test_remembered_commands_that_no_longer_fit_cost_round_trips_not_a_wrong_plan(runner, loopback_sshd, tmp_path):
    """The same context, other operations (as if the kit changed and its digest did not)."""
    target, memory = applied_and_remembered(runner, loopback_sshd, tmp_path, read_when_needed_operations)
    (tmp_path / "site" / "f4").write_text("drifted\n")

    [misfit] = runner.plan([target], many_facts_operations, memory=memory)
    [one_by_one] = runner.plan([target], many_facts_operations, batch_facts=False)
    assert [vars(op) for op in misfit.operations] == [vars(op) for op in one_by_one.operations]
    assert misfit.commands > 3, misfit.commands  # what the remembered batch lacked, one by one
    [refitted] = runner.plan([target], many_facts_operations, memory=memory)
    assert refitted.commands == 2, refitted.commands  # the batch, and the drifted file's content


@pytest.fixture(scope="module")
def logging_runner():
    """A runner child whose log reaches its output: whether a plan took an early batch's answer."""
    child = RunnerChild(debug_logging=True)
    yield child
    child.close()


def test_a_remembered_batch_sent_early_answers_the_plan_as_pyinfra_would(logging_runner, loopback_sshd, tmp_path):
    """Sent over OpenSSH before the plan (deploys/early_batch.py), through this real sshd."""
    target, memory = applied_and_remembered(logging_runner, loopback_sshd, tmp_path)
    (tmp_path / "site" / "f2").write_text("drifted\n")

    early = logging_runner.outcome("plan", [target], many_facts_operations, memory=memory, early=str(tmp_path / "early"))
    [one_by_one] = logging_runner.plan([target], many_facts_operations, batch_facts=False)
    [planned] = early.results
    assert "remembered on web1 (" in early.output and ", sent early)" in early.output
    assert [vars(op) for op in planned.operations] == [vars(op) for op in one_by_one.operations]
    assert [op.name for op in planned.operations if op.changed] == ["Write file 2"]
    assert planned.commands == 2, planned.commands  # the batch sent early, and f2's content


def logins(sshd) -> int:
    return sshd.log().count("Accepted publickey for ")


def test_a_plan_its_early_batch_answers_wholly_logs_in_once(logging_runner, loopback_sshd, tmp_path):
    """The early batch's session, and none of pyinfra's: pyinfra connects on first use, and a
    plan that sends no command of its own never uses it."""
    target, memory = applied_and_remembered(logging_runner, loopback_sshd, tmp_path)
    before = logins(loopback_sshd)

    early = logging_runner.outcome("plan", [target], many_facts_operations, memory=memory, early=str(tmp_path / "early"))
    [planned] = early.results
    assert ", sent early)" in early.output
    assert planned.status == "unchanged" and planned.commands == 1, planned
    assert logins(loopback_sshd) - before == 1

    (tmp_path / "site" / "f2").write_text("drifted\n")  # its content: one command through pyinfra
    before = logins(loopback_sshd)
    [drifted] = logging_runner.plan([target], many_facts_operations, memory=memory, early=str(tmp_path / "again"))
    assert drifted.commands == 2 and [op.name for op in drifted.operations if op.changed] == ["Write file 2"]
    assert logins(loopback_sshd) - before == 2


@contextmanager
def something_else_than_sshd():
    """An HTTP server on a free loopback port, where sshd was expected: (its port, the connections
    it accepted so far)."""
    import socket

    server_socket = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        with server_socket:
            while True:
                try:
                    conn, _ = server_socket.accept()
                except OSError:
                    return
                accepted.append(conn)
                with conn:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server_socket.getsockname()[1], accepted
    finally:
        server_socket.close()


def handshake_failed(port: int) -> str:
    """How an unreachable host's line starts when something else than sshd answers on `port`."""
    return f"cannot reach web1 (127.0.0.1:{port}): the SSH handshake failed ("


def test_a_host_that_accepted_the_early_batch_but_not_pyinfra_is_unreachable_in_one_line(runner, loopback_sshd, tmp_path):
    """A stand-in batch, run by this machine's `sh`, opens as a host that OpenSSH reaches; pyinfra
    then finds something else than sshd on the port. Its connection, made on first use, is tried
    once (the discovery's batch and the prepare both need it) and fails with an unreachable
    host's line."""
    memory = (str(tmp_path / "memory"), "context")
    with something_else_than_sshd() as (port, accepted):
        target = loopback_sshd.target_fields("web1", port=port, data=site_data(tmp_path))
        outcome = runner.outcome("plan", [target], many_facts_operations, memory=memory, standin=str(tmp_path / "standin"))
    [result] = outcome.results
    assert result.status == "unreachable" and result.operations == [] and result.commands == 0, result
    assert result.error.startswith(handshake_failed(port))
    assert outcome.progress.index("web1: connected") < outcome.progress.index("web1: unreachable")
    assert len(accepted) == 1


def test_a_host_whose_connection_first_fails_for_a_diff_is_unreachable(runner, loopback_sshd, tmp_path):
    """The stand-in batch answers the whole prepare (the memory moved to the port where something
    else than sshd answers): reading a drifted file's content for its diff is the first use."""
    from commonstack.deploys.fact_memory import FactMemory, where

    target, (folder, context) = applied_and_remembered(runner, loopback_sshd, tmp_path)
    (tmp_path / "site" / "f2").write_text("drifted\n")
    memory = FactMemory(Path(folder), context)
    at_sshd = where(SimpleNamespace(**target))
    with something_else_than_sshd() as (port, accepted):
        target["port"] = port
        memory.remember("web1", where(SimpleNamespace(**target)), memory.recall("web1", at_sshd), [],
                        lambda _: memory.recall_batch("web1", at_sshd))  # fmt: skip
        [result] = runner.plan([target], many_facts_operations, memory=(folder, context), standin=str(tmp_path / "standin"))
    assert result.status == "unreachable" and result.error.startswith(handshake_failed(port)), result
    assert len(accepted) == 1


def test_a_key_pyinfra_cannot_load_is_told_even_when_the_early_batch_answered(runner, loopback_sshd, tmp_path):
    """An encrypted key, which OpenSSH may use through an agent and pyinfra cannot: the stand-in
    batch answers the whole plan, and the plan still says why a deploy could not connect."""
    target, memory = applied_and_remembered(runner, loopback_sshd, tmp_path)
    encrypted = tmp_path / "encrypted_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(encrypted)], check=True)
    target["key_path"] = str(encrypted)

    outcome = runner.outcome("plan", [target], many_facts_operations, memory=memory, standin=str(tmp_path / "standin"))
    [result] = outcome.results
    assert result.status == "unreachable", result
    assert result.error.startswith(f"SSH key {encrypted} for web1 is encrypted — load it into ssh-agent"), result.error
    assert "web1: connected" not in outcome.progress


def test_an_early_batch_that_is_not_the_plans_is_left_for_pyinfra(logging_runner, loopback_sshd, tmp_path):
    """A remembered batch that the remembered commands no longer make (its file edited): its
    answer is not the plan's."""
    target, memory = applied_and_remembered(logging_runner, loopback_sshd, tmp_path)
    [file] = (tmp_path / "memory").iterdir()
    document = json.loads(file.read_text())
    document["batch"][1] = document["batch"][1].replace("sha1sum", "md5sum")
    file.write_text(json.dumps(document))

    early = logging_runner.outcome("plan", [target], many_facts_operations, memory=memory, early=str(tmp_path / "early"))
    [planned] = early.results
    assert "not used: not the batch the plan makes" in early.output and ", sent early)" not in early.output
    assert planned.status == "unchanged" and planned.commands == 1, planned  # the batch, through pyinfra


def test_a_fact_not_to_read_ahead_is_never_remembered(runner, loopback_sshd, tmp_path):
    data = {"dir": str(tmp_path / "site"), "mark": str(tmp_path / "probed"), "motd": str(tmp_path / "motd")}
    target = loopback_sshd.target_fields("web1", data=data)
    memory = (str(tmp_path / "memory"), "context")
    runner.plan([target], probe_when_needed_operations, memory=memory)
    assert (tmp_path / "probed").read_text() == "asked\n"  # no site yet: needed, so read
    (tmp_path / "site").mkdir()
    [result] = runner.plan([target], probe_when_needed_operations, memory=memory)
    assert result.status == "changed", result
    assert (tmp_path / "probed").read_text() == "asked\n"  # not needed any more: not run in the batch


# --- connection problems ----------------------------------------------------------------------


def test_unreachable_port_gives_one_clear_line(runner, loopback_sshd, tmp_path):
    port = free_port()
    target = loopback_sshd.target_fields("web1", port=port, data=site_data(tmp_path))

    [result] = runner.apply([target], site_operations)

    assert result.status == "unreachable"
    assert result.operations == []
    assert result.error == (
        f"cannot reach web1 (127.0.0.1:{port}): connection refused — is the host up and sshd "
        f"listening on port {port}?"
    )


def test_something_else_than_sshd_on_the_port(runner, loopback_sshd, tmp_path):
    with something_else_than_sshd() as (port, _):
        [result] = runner.plan([loopback_sshd.target_fields("web1", port=port)], site_operations)
    assert result.status == "unreachable"
    assert result.error.startswith(handshake_failed(port))
    assert result.error.endswith(f"is sshd (and nothing else) listening on port {port}?")


def test_host_key_mismatch_is_refused_and_nothing_changes(runner, loopback_sshd, tmp_path):
    wrong = loopback_sshd.other_known_hosts()
    before = wrong.read_text()
    target = loopback_sshd.target_fields("web1", known_hosts=wrong, data=site_data(tmp_path))

    [result] = runner.apply([target], site_operations)

    assert result.status == "unreachable"
    assert "\n" not in result.error
    assert result.error.startswith(
        f"host key of web1 (127.0.0.1:{loopback_sshd.port}) does not match {wrong}"
    )
    assert "if the host was reinstalled, remove its line" in result.error
    assert f"ssh-keygen -R '[127.0.0.1]:{loopback_sshd.port}'" in result.error
    assert not (tmp_path / "site").exists()
    assert wrong.read_text() == before


def test_unknown_host_key_is_refused_and_not_added(runner, loopback_sshd, tmp_path):
    empty = loopback_sshd.empty_known_hosts()
    before = empty.read_text()
    target = loopback_sshd.target_fields("web1", known_hosts=empty, data=site_data(tmp_path))

    [result] = runner.apply([target], site_operations)

    assert result.status == "unreachable"
    assert result.error.startswith(
        f"host key of web1 (127.0.0.1:{loopback_sshd.port}) is not in {empty}"
    )
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(loopback_sshd.workdir / "ssh_host_ed25519_key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert f"ssh-ed25519 {fingerprint}" in result.error  # what the server offered
    assert empty.read_text() == before  # strict: never accept-new
    assert not (tmp_path / "site").exists()


def test_missing_known_hosts_file(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", known_hosts=tmp_path / "nope" / "known_hosts")
    [result] = runner.plan([target], site_operations)
    assert result.status == "unreachable"
    assert "does not exist — pin the host's key there first" in result.error


def test_wrong_client_key_is_refused(runner, loopback_sshd, tmp_path):
    stranger = tmp_path / "stranger_key"
    make_keypair(stranger)
    target = loopback_sshd.target_fields("web1", key_path=stranger)

    [result] = runner.plan([target], site_operations)

    assert result.status == "unreachable"
    assert result.error.startswith(
        f"web1 (127.0.0.1:{loopback_sshd.port}) refused SSH login as root with key {stranger}"
    )
    assert "authorized_keys" in result.error


def test_unusable_key_file(runner, loopback_sshd, tmp_path):
    not_a_key = tmp_path / "id_ed25519"
    not_a_key.write_text("this is not a key\n")
    [result] = runner.plan(
        [loopback_sshd.target_fields("web1", key_path=not_a_key)], site_operations
    )
    assert result.status == "unreachable"
    assert result.error.startswith(f"cannot use SSH key {not_a_key} for web1:")


def test_fail_fast_with_an_unreachable_host_changes_nothing(runner, loopback_sshd, tmp_path):
    targets = [
        loopback_sshd.target_fields("web1", data=site_data(tmp_path)),
        loopback_sshd.target_fields("web2", port=free_port(), data=site_data(tmp_path)),
    ]
    web1, web2 = runner.apply(targets, site_operations, fail_fast=True)
    assert web2.status == "unreachable"
    assert (web1.status, web1.error) == (
        "failed",
        "not started on web1: web2 is unreachable and fail_fast is set",
    )
    assert not (tmp_path / "site").exists()


# --- operation failures -------------------------------------------------------------------


def test_failing_shell_marks_the_host_failed_with_its_last_stderr_line(
    runner, loopback_sshd, tmp_path
):
    data = {"dir": str(tmp_path), "command": BOOM}
    [result] = runner.apply([loopback_sshd.target_fields("web1", data=data)], failing_operations)

    assert result.status == "failed"
    assert result.error == "operation 'Run migration' failed on web1: migrate: disk full"
    assert [(op.name, op.changed) for op in result.operations] == [
        ("Write motd", True),
        ("Run migration", False),
    ]
    assert (tmp_path / "motd").exists()
    assert not (tmp_path / "after").exists()


def two_targets(sshd, tmp_path, good_data: dict, bad_data: dict) -> tuple[list, Path, Path]:
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    targets = [
        sshd.target_fields("good", data={"dir": str(good_dir), **good_data}),
        sshd.target_fields("bad", data={"dir": str(bad_dir), **bad_data}),
    ]
    return targets, good_dir, bad_dir


def test_one_failing_host_does_not_stop_the_other(runner, loopback_sshd, tmp_path):
    targets, good_dir, bad_dir = two_targets(
        loopback_sshd, tmp_path, {"command": "true"}, {"command": BOOM}
    )

    good, bad = runner.apply(targets, failing_operations, fail_fast=False)

    assert (good.name, good.status, good.error) == ("good", "changed", None)
    assert [op.changed for op in good.operations] == [True, True, True]
    assert (good_dir / "after").read_text() == "after\n"
    assert (bad.name, bad.status) == ("bad", "failed")
    assert bad.error == "operation 'Run migration' failed on bad: migrate: disk full"
    assert not (bad_dir / "after").exists()


def test_fail_fast_stops_the_other_hosts_between_operations(runner, loopback_sshd, tmp_path):
    targets, good_dir, bad_dir = two_targets(
        loopback_sshd, tmp_path, {"command": "true"}, {"command": BOOM}
    )

    good, bad = runner.apply(targets, failing_operations, fail_fast=True)

    assert bad.status == "failed" and "migrate: disk full" in bad.error
    # pyinfra finishes the running operation on every host, then stops everywhere.
    assert good.status == "failed"
    assert good.error == "stopped on good after 2 of 3 operations: bad failed and fail_fast is set"
    assert [op.name for op in good.operations] == ["Write motd", "Run migration"]
    assert not (good_dir / "after").exists()


def test_a_sudo_password_prompt_fails_the_operation_instead_of_blocking(runner, loopback_sshd):
    """pyinfra calls getpass() when a command prints "sudo: a password is required"."""
    [result] = runner.apply([loopback_sshd.target_fields("web1")], sudo_prompt_operations)
    assert result.status == "failed"
    assert result.error == (
        "operation 'Needs sudo' failed on web1: sudo asked for a password — let root use sudo "
        "without a password (NOPASSWD) or connect as root"
    )


def test_template_error_fails_the_host_before_anything_changes(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data={"dir": str(tmp_path)})
    [result] = runner.apply([target], broken_template_operations)

    assert result.status == "failed"
    assert result.error.startswith(
        "preparing operations on web1 failed at 'Write broken config': Error in template:"
    )
    assert "\n" not in result.error
    assert result.operations == []
    assert not (tmp_path / "motd").exists()


def test_a_fact_that_cannot_be_read_fails_only_that_host(runner, loopback_sshd, tmp_path):
    hidden = "probe-" + SECRET
    targets, good_dir, bad_dir = two_targets(
        loopback_sshd,
        tmp_path,
        {"probe": "echo ok"},
        {"probe": f": {hidden}; echo 'cannot stat /srv: Permission denied' >&2; exit 2"},
    )

    good, bad = runner.apply(targets, fact_probe_operations)

    assert good.status == "changed"
    assert bad.status == "failed"
    assert bad.error == (  # the fact's command line (and what it carries) is left out
        "preparing operations on bad failed: could not read server.Command: cannot stat /srv: "
        "Permission denied"
    )
    assert not (bad_dir / "motd").exists()


def test_an_exception_in_deploy_code_names_where_it_happened(runner, loopback_sshd, tmp_path):
    target = loopback_sshd.target_fields("web1", data={"dir": str(tmp_path)})
    [result] = runner.plan([target], typo_operations)
    assert result.status == "failed"
    assert result.error == (
        "preparing operations on web1 failed after 'Write motd': AttributeError: "
        "Host `web1` has no data `no_such_key`"
    )
    assert result.operations == []


def test_hosts_with_different_operations_each_report_their_own(runner, loopback_sshd, tmp_path):
    data = {"dir": str(tmp_path)}
    targets = [
        loopback_sshd.target_fields("web1", data=data),
        loopback_sshd.target_fields("web2", data=data),
    ]
    results = {r.name: r for r in runner.outcome("apply", targets, per_host_operations).results}
    assert [op.name for op in results["web1"].operations] == ["Only on web1", "On both"]
    assert [op.name for op in results["web2"].operations] == ["On both"]
    assert all(op.changed for r in results.values() for op in r.operations)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "web1-both", "web2-both"]


# --- a non-root login ---------------------------------------------------------------------


def _non_root_login_user() -> str | None:
    shells = {line.strip() for line in Path("/etc/shells").read_text().splitlines()}
    for entry in pwd.getpwall():
        if entry.pw_uid >= 1000 and entry.pw_shell in shells and entry.pw_name != "nobody":
            return entry.pw_name
    return None


def test_non_root_user_goes_through_the_sudo_preflight(runner, tmp_path):
    """A non-root target gets `sudo -n` checked before anything runs, and its operations run
    with sudo (host data `_sudo`). The outcome depends on this machine's sudo setup."""
    user = _non_root_login_user()
    if user is None:
        pytest.skip("no non-root user with a login shell on this machine")
    site = tmp_path / "site"
    site.mkdir(mode=0o700)  # only root (i.e. sudo) can write here

    with start_loopback_sshd(use_pam=True) as sshd:
        target = sshd.target_fields("web1", user=user, data={"dir": str(site)})
        [result] = runner.apply([target], root_owned_file_operations)

    if result.status == "unreachable":
        pytest.skip(f"PAM login as {user} not possible here: {result.error}")
    if result.status == "failed":
        assert result.error in (
            f"web1: connected as {user}, but sudo is not installed — connect as root, or install "
            f"sudo and let {user} use it without a password",
            f"web1: {user} cannot use sudo without a password — add '{user} ALL=(ALL) NOPASSWD: "
            f"ALL' in /etc/sudoers.d/, or connect as root",
        )
        assert result.operations == []
        assert not (site / "x").exists()
    else:
        assert result.status == "changed"
        assert (site / "x").stat().st_uid == 0


# --- secrets and output ---------------------------------------------------------------------


def test_nothing_leaks_to_the_terminal_or_logs(loopback_sshd, tmp_path):
    """Even with DEBUG logging configured on the root logger (as a CLI --debug would), no
    pyinfra/paramiko log line — command lines, template data, command output — gets out."""
    target = loopback_sshd.target_fields("web1", data=site_data(tmp_path))
    child = RunnerChild(debug_logging=True)
    try:
        planned = child.outcome("plan", [target], secret_operations, redact=[SECRET])
        applied = child.outcome("apply", [target], secret_operations, redact=[SECRET])
    finally:
        child.close()

    for outcome in (planned, applied):
        assert SECRET not in outcome.output
        assert not any(SECRET in line for line in outcome.progress)
        assert not any("echo" in line for line in outcome.progress)  # names, not commands
    assert "password = ********" in ops_by_name(planned.results[0])["Write app config"].diff
    [result] = applied.results
    assert result.status == "failed"
    assert result.error == "operation 'Use the secret' failed on web1: ********"
    assert "operation: Use the secret" in applied.progress


# --- pieces -------------------------------------------------------------------------------


def test_importing_the_runner_patches_gevent_and_connect_does_not():
    code = (
        "import sys; from gevent import monkey\n"
        "import commonstack.deploys.connect\n"
        "print(monkey.is_module_patched('socket'))\n"
        "import commonstack.deploys.runner\n"
        "print(monkey.is_module_patched('socket'), monkey.is_module_patched('threading'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    assert out == ["False", "True", "True"]


def test_targets_are_validated(runner, loopback_sshd):
    t = loopback_sshd.target_fields("web1")
    outcome = runner.outcome("plan", [t, t], no_operations)
    assert "two targets are named 'web1'" in outcome.runner_error
    clash = loopback_sshd.target_fields("x", data={"ssh_port": 2})
    assert "must not set ssh_port" in runner.outcome("plan", [clash], no_operations).runner_error
    assert runner.plan([], no_operations) == []


def test_sudo_probe_never_prompts_and_always_answers():
    result = subprocess.run(["sh", "-c", SUDO_PROBE], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() in {
        "COMMONSTACK_SUDO=ok",
        "COMMONSTACK_SUDO=missing",
        "COMMONSTACK_SUDO=password",
    }
    assert "password is required" not in result.stderr  # would trigger pyinfra's getpass()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("COMMONSTACK_SUDO=ok", None),
        ("COMMONSTACK_SUDO=missing", "web1: connected as admin, but sudo is not installed"),
        ("COMMONSTACK_SUDO=password", "web1: admin cannot use sudo without a password"),
    ],
)
def test_sudo_problem_lines(answer, expected):
    from pyinfra.connectors.util import CommandOutput, OutputLine

    class FakeHost:
        def run_shell_command(self, command):
            return True, CommandOutput([OutputLine("stdout", answer)])

    target = SimpleNamespace(name="web1", address="127.0.0.1", port=22, user="admin")
    problem = sudo_problem(FakeHost(), target)
    if expected is None:
        assert problem is None
    else:
        assert problem.startswith(expected)
