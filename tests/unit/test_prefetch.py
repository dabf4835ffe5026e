"""Reading facts in batches (commonstack.deploys.prefetch): the batch script run by this machine's
own `sh`, table by table — what a command printed in, what pyinfra's connector would have read
out — and when a batch's answer is used. The whole path on a real sshd is in test_runner.py
(test_batched_facts_answer_as_one_by_one_in_a_few_remote_commands).

Imports pyinfra_api, never the runner: the runner patches gevent, which a pytest process must
not do (see test_runner.py).
"""

from __future__ import annotations

import posixpath
import subprocess
from types import SimpleNamespace

import pytest
from pyinfra.facts.files import Directory, File, Sha1File
from pyinfra.facts.server import Date, Os
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from commonstack.deploys import pyinfra_api as api
from commonstack.deploys.prefetch import FactAnswers, batch_script, command_key, parse_batch


def run_batch(commands: list[tuple[str, str | None]], lanes: int = 4) -> dict:
    completed = subprocess.run(["sh"], input=batch_script(commands, lanes), capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    return parse_batch(completed.stdout.splitlines())


# (shell command, condition) -> (exit status, stdout lines, stderr lines), as pyinfra's SSH
# connector reads a command's output: split at newlines, a last line without one kept.
CASES = [
    (("echo one; echo two", None), (0, ["one", "two"], [])),
    (("printf 'no newline at the end'", None), (0, ["no newline at the end"], [])),
    (("true", None), (0, [], [])),
    (("echo; echo", None), (0, ["", ""], [])),
    (("echo out; echo err >&2; exit 3", None), (3, ["out"], ["err"])),
    (("printf '  spaces kept  \\n\\ttab\\n'", None), (0, ["  spaces kept  ", "\ttab"], [])),
    (("echo \"it's \\\"quoted\\\"\"; echo '# not a comment'", None), (0, ['it\'s "quoted"', "# not a comment"], [])),
    (("echo 'two\nlines in one command'", None), (0, ["two", "lines in one command"], [])),
    (("printf 'caf\\303\\251'", None), (0, ["café"], [])),
    (("cat", None), (0, [], [])),  # stdin is /dev/null: nothing waits for input
    (("echo ran", "true"), (0, ["ran"], [])),
]


@pytest.mark.parametrize(("command", "expected"), CASES, ids=[c[0][0][:30] for c in CASES])
def test_a_batched_command_reads_as_pyinfra_would_read_it(command, expected):
    assert run_batch([command]) == {0: expected}


def test_commands_side_by_side_keep_their_own_output_and_order():
    commands = [(f"echo {n}; echo e{n} >&2; exit {n % 3}", None) for n in range(23)]
    for lanes in (1, 4, 30):
        found = run_batch(commands, lanes)
        assert found == {n: (n % 3, [str(n)], [f"e{n}"]) for n in range(23)}


def test_what_is_not_text_or_not_run_is_left_out():
    found = run_batch([("printf '\\377\\376'", None), ("echo skipped", "false"), ("echo kept", None)])
    assert found == {2: (0, ["kept"], [])}


def test_a_batch_that_printed_nothing_usable_answers_nothing():
    assert parse_batch([]) == {}
    assert parse_batch(["not base64 at all!"]) == {}


def test_the_key_holds_the_command_and_every_argument_and_refuses_stdin():
    key = command_key(api.StringCommand("stat", api.QuoteString("/a b")), {"_sudo": True, "_sudo_user": "postgres"})
    assert key == command_key("stat '/a b'", {"_sudo_user": "postgres", "_sudo": True})
    assert key != command_key("stat '/a b'", {"_sudo": True, "_sudo_user": "www-data"})
    assert command_key("cat", {"_stdin": "secret"}) is None
    assert command_key("top", {"_get_pty": True}) is None


def test_answers_serve_only_while_preparing():
    answers = FactAnswers()
    output = api.CommandOutput([api.OutputLine("stdout", "1")])
    answers.outputs[command_key("uptime", {})] = (1, output)
    answers.outputs[command_key("uptime", {"_success_exit_codes": [0, 1]})] = (1, output)
    sent = []

    def host_run(command, print_output=False, print_input=False, **arguments):
        sent.append(command)
        return True, api.CommandOutput([])

    preparing = SimpleNamespace(current_stage=api.StateStage.Prepare)
    executing = SimpleNamespace(current_stage=api.StateStage.Execute)
    assert answers.run(preparing, host_run, "uptime", False, False) == (False, output)  # exit 1: failed
    assert answers.run(preparing, host_run, "uptime", False, False, _success_exit_codes=[0, 1]) == (True, output)
    assert sent == [] and answers.answered == 2
    answers.run(executing, host_run, "uptime", False, False)  # a host changes while executing
    answers.run(preparing, host_run, "hostname", False, False)  # never batched
    assert sent == ["uptime", "hostname"] and answers.sent == 2


@pytest.mark.parametrize(
    ("fact", "kwargs", "related"),
    [
        (File, {"path": "/etc/caddy/Caddyfile"}, [Sha1File, Directory]),
        (File, {"path": "/swapfile"}, [Sha1File, Directory]),
        (File, {"path": "/var/lib/apt/periodic/update-success-stamp"}, [Sha1File, Directory, Date]),
        (SystemdStatus, {"services": ["caddy.service"], "user_mode": False}, [SystemdEnabled]),
        (Directory, {"path": "/etc"}, []),
        (Os, {}, []),
    ],
)
def test_related_facts_follow_pyinfras_operations(fact, kwargs, related):
    found = api.related_facts(fact, kwargs)
    assert [f for f, _, _ in found] == related
    for _, related_kwargs, condition in found:
        if fact is File and "path" in related_kwargs:
            assert related_kwargs["path"] in (kwargs["path"], posixpath.dirname(kwargs["path"]))
    if fact is File:  # a checksum only of a small regular file (a swap file takes seconds)
        sha1_condition = found[0][2]
        small = subprocess.run(["sh", "-c", sha1_condition.replace(kwargs["path"], "/etc/hostname")])
        assert small.returncode == 0
        assert subprocess.run(["sh", "-c", sha1_condition.replace(kwargs["path"], "/etc")]).returncode != 0
