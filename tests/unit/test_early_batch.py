"""A fact batch sent early (commonstack.deploys.early_batch), run here by this machine's `sh` in
place of ssh: what it answers, and when it answers nothing (then pyinfra's connection sends the
batch). Through a real sshd, with the runner, in test_runner.py; through the CLI, on test hosts,
in tests/integration/test_infrastructure.py."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from click.testing import CliRunner

from commonstack.cli import main
from commonstack.deploys import fact_memory
from commonstack.deploys.early_batch import CONNECT_GRACE, EarlyBatch, early_batches, opened
from commonstack.deploys.prefetch import batch_script, parse_batch
from commonstack.inventories.groups import group
from commonstack.inventories.openssh import key_exchanges
from commonstack.inventories.targets import host_targets

SCRIPT = batch_script([("echo one; echo two", None), ("echo out; echo err >&2; exit 3", None)])
# `sh -c 'CONNECTION' LINE`: the "connection" opens at once (exec), after a while, or never.
OPENS = ['exec "$0"']


def sent(tmp_path, script: str = SCRIPT, connection: list[str] = OPENS) -> EarlyBatch:
    """The batch, once its "connection" opened (as a plan asks for it after loading pyinfra)."""
    batch = EarlyBatch.send(["sh", "-c", *connection], "sh", script, tmp_path / "0")
    for _ in range(1000):
        if batch._started() or connection != OPENS:
            break
        time.sleep(0.01)
    return batch


def test_it_answers_what_the_script_prints_as_pyinfra_would_read_it(tmp_path):
    batch = sent(tmp_path)
    answer = batch.answer("sh", SCRIPT)
    alone = subprocess.run(["sh"], input=SCRIPT, capture_output=True, text=True, check=True)
    assert answer == alone.stdout.splitlines()
    assert parse_batch(answer) == {0: (0, ["one", "two"], []), 1: (3, ["out"], ["err"])}
    assert batch.process.poll() is not None


def test_it_waits_for_a_batch_still_running(tmp_path):
    slow = "sleep 0.5\n" + SCRIPT
    started = time.monotonic()
    assert parse_batch(sent(tmp_path, slow).answer("sh", slow))[0] == (0, ["one", "two"], [])
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize("line, script", [("sh", SCRIPT.replace("one", "uno")), ("sudo -n sh", SCRIPT)])
def test_another_batch_than_the_plans_answers_nothing_and_is_stopped(tmp_path, line, script):
    batch = sent(tmp_path, "exec sleep 30\n")
    assert batch.answer(line, script) is None
    assert batch.process.poll() is not None


def test_a_connection_not_open_when_the_plan_asks_is_not_waited_for(tmp_path):
    """A host ssh cannot reach the way pyinfra does (a ProxyJump in ~/.ssh/config): no timeout waited out."""
    batch = sent(tmp_path, connection=["exec sleep 30"])
    started = time.monotonic()
    assert batch.answer("sh", SCRIPT) is None
    assert time.monotonic() - started < CONNECT_GRACE + 0.5 and batch.process.poll() is not None


def test_a_connection_that_opens_a_moment_late_is_waited_for(tmp_path):
    batch = sent(tmp_path, connection=[f'sleep {CONNECT_GRACE / 2}; exec "$0"'])
    assert batch.answer("sh", SCRIPT) is not None


@pytest.mark.parametrize("script", ["exit 1\n", SCRIPT.replace("base64 -w 0 && echo", "false")])
def test_a_batch_that_fails_answers_nothing(tmp_path, script):
    assert sent(tmp_path, script).answer("sh", script) is None


@pytest.mark.parametrize("script, answers", [("exit 1\n", False), (SCRIPT, True)])
def test_its_end_is_read_from_what_it_printed_not_from_its_exit_status(tmp_path, script, answers):
    """Once gevent patches subprocess it reaps every child: ssh's status reads as 0 then."""
    batch = sent(tmp_path, script)
    os.waitpid(batch.process.pid, 0)  # reaped by someone else
    assert (batch.answer("sh", script) is not None) == answers


def test_the_batches_that_opened_are_known_within_one_grace_for_all(tmp_path):
    """Those the runner connects pyinfra to on first use; the others are stopped."""
    folders = [tmp_path / name for name in ("open", "late", "never", "nor")]
    for folder in folders:
        folder.mkdir()
    never = ["exec sleep 30"]
    batches = {
        "open": sent(folders[0]),
        "late": sent(folders[1], connection=[f'sleep {CONNECT_GRACE / 2}; exec "$0"']),
        "never": sent(folders[2], connection=never),
        "nor": sent(folders[3], connection=never),
    }
    started = time.monotonic()
    assert opened(batches) == {"open", "late"}
    assert time.monotonic() - started < 1.5 * CONNECT_GRACE  # one grace, not one each
    assert batches["never"].process.poll() is not None and batches["nor"].process.poll() is not None
    assert batches["late"].answer("sh", SCRIPT) is not None


@pytest.mark.parametrize("sudo_exits, opens", [(0, True), (1, False)])
def test_a_batch_for_a_user_other_than_root_opens_only_if_sudo_needs_no_password(tmp_path, sudo_exits, opens):
    """A stand-in `sudo` first on the PATH: it records how it was called and exits as told."""
    bin = tmp_path / "bin"
    bin.mkdir()
    (bin / "sudo").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" > {tmp_path}/sudo-args\nexit {sudo_exits}\n')
    (bin / "sudo").chmod(0o755)
    connection = ["sh", "-c", f'PATH={bin}:$PATH exec "$0"']
    batch = EarlyBatch.send(connection, "sh", SCRIPT, tmp_path / "0", sudo=True)
    assert batch.opened(time.monotonic() + 5) == opens
    assert (tmp_path / "sudo-args").read_text() == "-n true\n"
    assert (batch.answer("sh", SCRIPT) is not None) == opens


@pytest.fixture
def coop(tmp_path):
    """A chat group on an address no one answers (203.0.113.7, TEST-NET-3), made by `init`."""
    inventories = tmp_path / "inventories"
    made = CliRunner().invoke(main, ["--inventories", str(inventories), "init", "coop", "--preset", "chat",
                                     "--domain", "coop.example.org", "--host", "root@203.0.113.7"])  # fmt: skip
    assert made.exit_code == 0, made.output
    return group("coop", inventories)


def test_nothing_is_sent_for_a_group_that_cannot_be_reached_yet(coop):
    """No pinned host keys: the plan says so; sending early only steps aside."""
    with early_batches(coop, (), (), purge=False) as early:
        assert early == {}


def test_the_batch_the_plan_remembered_is_sent_and_stopped_at_the_end(coop, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    coop.known_hosts.write_text("203.0.113.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEa7mM3p3QHMdLs2mJvZ6n6sX3lH0Ww9dGvY8fQ1z2x3\n")
    [target] = host_targets(coop, coop.load())
    remembered = fact_memory.of_group(coop, deploy=True, only=(), purge=False, skip_unavailable=False)
    remembered.remember(target.name, fact_memory.where(target), {"k": ("echo one", None)}, [], lambda kept: ("sh -c sh", SCRIPT))
    # A stand-in for ssh whose connection never opens (the address is TEST-NET's: nothing answers
    # there, but a machine may refuse at once); the key exchanges are read from the real one first.
    key_exchanges()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ssh").write_text("#!/bin/sh\nexec sleep 30\n")
    (tmp_path / "bin" / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with early_batches(coop, (), (), purge=False) as early:
        [(name, batch)] = early.items()
        assert name == target.name and (batch.line, batch.script) == ("sh -c sh", SCRIPT)
        assert batch.process.poll() is None
    assert batch.process.poll() is not None
