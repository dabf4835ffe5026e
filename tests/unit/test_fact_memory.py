"""Remembered fact commands (commonstack.deploys.fact_memory): used only where they were made,
never holding a secret, and a file that cannot be read or written only costs a discovery pass.
How the runner uses them is tested in test_runner.py, against a real sshd."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from commonstack.deploys.fact_memory import KEPT, FactMemory, context_of

COMMANDS = {"key-1": ("echo one", None), "key-2": ("stat /etc/motd", "test -e /etc/motd")}


def test_commands_are_recalled_as_remembered(tmp_path):
    memory = FactMemory(tmp_path / "memory", "context")
    memory.remember("web1", "root@10.0.0.2:22", COMMANDS, secrets=[])
    assert memory.recall("web1", "root@10.0.0.2:22") == COMMANDS
    assert memory.recall("web2", "root@10.0.0.2:22") == {}  # another host
    memory.forget("web1")
    assert memory.recall("web1", "root@10.0.0.2:22") == {}


@pytest.mark.parametrize(
    "context, where",
    [("other context", "root@10.0.0.2:22"), ("context", "root@10.0.0.3:22"), ("context", "admin@10.0.0.2:22")],
)
def test_other_code_profile_options_or_address_recall_nothing(tmp_path, context, where):
    FactMemory(tmp_path, "context").remember("web1", "root@10.0.0.2:22", COMMANDS, secrets=[])
    assert FactMemory(tmp_path, context).recall("web1", where) == {}


@pytest.mark.parametrize("quoted", [repr, shlex.quote, lambda s: shlex.quote(f"sh -c {shlex.quote(s)}")])
def test_a_command_holding_a_quoted_secret_is_never_written(tmp_path, quoted):
    secret = "it's\\a-long-pass phrase"
    memory = FactMemory(tmp_path / "memory", "context")
    memory.remember("web1", "root@h:22", {**COMMANDS, "key-3": (f"psql -c {quoted(secret)}", None)}, secrets=[secret])
    assert memory.recall("web1", "root@h:22") == COMMANDS


def test_a_command_holding_a_secret_is_never_written(tmp_path):
    memory = FactMemory(tmp_path / "memory", "context")
    commands = {**COMMANDS, "key-3": ("psql -c 'ALTER ROLE x PASSWORD hunter2-long'", None)}
    memory.remember("web1", "root@h:22", commands, secrets=["hunter2-long", ""])
    assert memory.recall("web1", "root@h:22") == COMMANDS
    assert not any("hunter2" in path.read_text() for path in (tmp_path / "memory").iterdir())


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '{"context": "x"}', '{"context": 1, "commands": [[1]]}', "CONTEXT [[\"k\", 1, null]]",
     "CONTEXT [[\"k\", \"line\", 2]]", "CONTEXT [[[\"k\"], \"line\", null]]"],
)  # fmt: skip
def test_an_unreadable_file_recalls_nothing(tmp_path, content):
    memory = FactMemory(tmp_path, "context")
    memory.remember("web1", "root@h:22", COMMANDS, secrets=[])
    [file] = tmp_path.iterdir()
    context = json.loads(file.read_text())["context"]
    if content.startswith("CONTEXT "):  # the right context, commands of the wrong shape
        content = json.dumps({"context": context, "commands": json.loads(content.removeprefix("CONTEXT "))})
    file.write_text(content)
    assert memory.recall("web1", "root@h:22") == {}


def test_a_file_in_the_way_of_the_folder_is_no_error(tmp_path):
    (tmp_path / "memory").write_text("not a folder")
    memory = FactMemory(tmp_path / "memory", "context")
    memory.remember("web1", "root@h:22", COMMANDS, secrets=[])
    memory.forget("web1")
    assert memory.recall("web1", "root@h:22") == {}


def test_the_context_follows_its_parts():
    assert context_of(["a", b"profile"]) == context_of(["a", b"profile"])
    assert context_of(["a", b"profile"]) != context_of(["a", b"profile 2"])


def test_two_contexts_keep_their_own_lists_and_a_changed_host_loses_all(tmp_path):
    plan, check = FactMemory(tmp_path, "plan"), FactMemory(tmp_path, "sizing")
    plan.remember("web1", "root@h:22", COMMANDS, secrets=[])
    check.remember("web1", "root@h:22", {"key-1": ("echo one", None)}, secrets=[])
    plan.remember("web2", "root@h2:22", COMMANDS, secrets=[])
    assert plan.recall("web1", "root@h:22") == COMMANDS
    assert check.recall("web1", "root@h:22") == {"key-1": ("echo one", None)}
    plan.forget("web1")
    assert plan.recall("web1", "root@h:22") == check.recall("web1", "root@h:22") == {}
    assert plan.recall("web2", "root@h2:22") == COMMANDS


def test_only_the_last_few_lists_of_a_host_are_kept(tmp_path):
    for number in range(KEPT + 3):
        memory = FactMemory(tmp_path, f"profile {number}")
        memory.remember("web1", "root@h:22", COMMANDS, secrets=[])
        os.utime(memory._file("web1", "root@h:22"), (number, number))  # one a second, oldest first
    assert len(list(tmp_path.iterdir())) == KEPT
    kept = [number for number in range(KEPT + 3) if FactMemory(tmp_path, f"profile {number}").recall("web1", "root@h:22")]
    assert kept == list(range(3, KEPT + 3))  # the newest


def test_a_write_that_fails_leaves_no_temporary_file(tmp_path):
    memory = FactMemory(tmp_path, "context")
    memory._file("web1", "root@h:22").mkdir()  # os.replace cannot put a file there
    memory.remember("web1", "root@h:22", COMMANDS, secrets=[])
    assert [path.name for path in tmp_path.iterdir()] == [memory._file("web1", "root@h:22").name]


def test_the_batch_is_made_of_the_commands_kept_and_recalled_with_them(tmp_path):
    memory = FactMemory(tmp_path, "context")
    made_of = []

    def batch(kept):
        made_of.append(kept)
        return "sh -c sh", "".join(f"{line}\n" for line, _ in kept.values())

    memory.remember("web1", "root@h:22", {**COMMANDS, "key-3": ("psql -c 'a-long-secret'", None)}, ["a-long-secret"], batch)
    assert made_of == [COMMANDS]  # never the command holding the secret
    assert memory.recall_batch("web1", "root@h:22") == ("sh -c sh", "echo one\nstat /etc/motd\n")
    assert FactMemory(tmp_path, "other context").recall_batch("web1", "root@h:22") is None
    assert memory.recall_batch("web1", "root@h2:22") is None


def test_a_batch_holding_a_secret_is_not_kept_its_commands_are(tmp_path):
    memory = FactMemory(tmp_path, "context")
    memory.remember("web1", "root@h:22", COMMANDS, ["a-long-secret"], lambda kept: ("sudo -S a-long-secret", "echo"))
    assert memory.recall("web1", "root@h:22") == COMMANDS
    assert memory.recall_batch("web1", "root@h:22") is None


def test_a_list_remembered_without_its_batch_has_none_to_send(tmp_path):
    memory = FactMemory(tmp_path, "context")
    memory.remember("web1", "root@h:22", COMMANDS, secrets=[])
    assert memory.recall("web1", "root@h:22") == COMMANDS and memory.recall_batch("web1", "root@h:22") is None
