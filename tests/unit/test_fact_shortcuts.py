"""The shortcuts of the fact batches (deploys/fact_shortcuts.py) print what pyinfra's own fact
commands print, byte for byte: run side by side on this machine's account files, and on made-up
ones (bind-mounted over /etc in a mount namespace of the test's own: the machine's files are
never touched) with the cases where a careless reading would differ; and on files of every kind
and oddly named, for the paths' stats and the files' checksums asked at once."""

from __future__ import annotations

import os
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from pyinfra.facts.files import Link

from commonstack.deploys import pyinfra_api as api
from commonstack.deploys.fact_shortcuts import USERS, at_once, checksums_at_once, paths_at_once, shortcut, units_at_once
from tests.unit.pyinfra_tables import load_fact

NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="bind-mounting account files needs root and unshare"
)


def outputs(replaced: dict[str, str] | None = None, tmp_path=None) -> tuple[bytes, bytes]:
    """(pyinfra's Users command's stdout, its shortcut's), with `replaced` files mounted over
    their paths (in a mount namespace of their own)."""
    mounts = []
    for index, (path, content) in enumerate((replaced or {}).items()):
        made = tmp_path / f"file{index}"
        made.write_bytes(content.encode("latin-1"))
        mounts.append(f"mount --bind {made} {path}")
    both = f"sh -c {shlex.quote(USERS)} >{tmp_path}/pyinfra && sh -c {shlex.quote(shortcut(USERS))} >{tmp_path}/shortcut"
    command = ["sh", "-c", both] if not mounts else ["unshare", "--mount", "sh", "-c", " && ".join([*mounts, both])]
    subprocess.run(command, check=True, capture_output=True)
    return (tmp_path / "pyinfra").read_bytes(), (tmp_path / "shortcut").read_bytes()


def test_the_users_shortcut_prints_what_pyinfra_prints_on_this_machine(tmp_path):
    ours, theirs = outputs(tmp_path=tmp_path)
    assert ours.count(b"\n") >= 2, "this machine has accounts"
    assert theirs == ours


PASSWD = """root:x:0:0:root:/root:/bin/bash
toor:x:0:0:second root:/root:/bin/sh
User:x:1001:1001::/home/User:/bin/sh
ro:x:1002:1002::/:/bin/sh
orphan:x:1003:4242::/:/usr/sbin/nologin
admin:x:1000:1000::/home/admin:/bin/bash
admin:x:1004:1000:again:/x:/bin/sh
"""
GROUP = """root:x:0:
sudo:x:27:admin,User,orphan
admin:x:1000:
User:x:1001:admin
ro:x:1002:
ro-again:x:1002:
sudo:x:28:ro
"""
SHADOW = """root:*:19000:0:99999:7:::
admin:!:19000:0:99999:7:::
admin:$y$j9T$abc$def:19000:0:99999:7:::
toor::19000:0:99999:7:::
toor::19000:0:99999:7:::
User
"""
NSSWITCH = "passwd:         files\ngroup:          files\nshadow:         files\n"


def lastlog(records: dict[int, tuple[int, str, str]]) -> str:
    """A lastlog file: a record of (time, terminal, host) at each uid's place."""
    size = struct.calcsize("=i32s256s")
    data = bytearray(size * (max(records) + 1))
    for uid, (when, line, host) in records.items():
        data[uid * size : (uid + 1) * size] = struct.pack("=i32s256s", when, line.encode(), host.encode())
    return data.decode("latin-1")


ODD = {
    "/etc/passwd": PASSWD,
    "/etc/group": GROUP,
    "/etc/shadow": SHADOW,
    "/etc/nsswitch.conf": NSSWITCH,
    "/var/log/lastlog": lastlog({0: (1764000000, "pts/0", "192.0.2.1"), 1001: (1764100000, "pts/1", "host.example")}),
}


@NEEDS_ROOT
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"/etc/passwd": PASSWD + "first.last:x:1005:1000::/:/bin/sh\n"},  # '.': a pattern to grep
        {"/etc/passwd": PASSWD.replace("second root", "back\\tslash")},  # dash's echo would print a tab
        {"/etc/nsswitch.conf": NSSWITCH.replace("group:          files", "group: files ldap")},
        {"/etc/passwd": PASSWD + "short:x:1006\nbad:x:abc:1000::/:/bin/sh\n"},  # accounts no program can read
    ],
    ids=["same uid, prefixes, no group name, twice the same name", "a dot", "a backslash",
         "a directory service (pyinfra's command runs)", "malformed lines"],  # fmt: skip
)
def test_the_users_shortcut_prints_what_pyinfra_prints_on_odd_account_files(tmp_path, changes):
    ours, theirs = outputs({**ODD, **changes}, tmp_path)
    assert b"toor" in ours and b"pts/0" in ours, "the made-up files were read"
    assert theirs == ours


@NEEDS_ROOT
def test_the_users_shortcut_runs_fewer_processes():
    """What it is for; counted exactly in a process-id namespace of its own (the machine's ids
    wrap around and other processes take some meanwhile)."""

    def processes(command: str) -> int:
        """The processes `command` started: the ids handed out after the namespace's first (1)."""
        script = f"{command} >/dev/null; sh -c 'echo $$'"
        last = subprocess.run(["unshare", "--pid", "--fork", "sh", "-c", script], capture_output=True, text=True, check=True).stdout
        return int(last) - 2

    assert processes(f"sh -c {shlex.quote(shortcut(USERS))}") * 3 < processes(f"sh -c {shlex.quote(USERS)}")


def test_a_command_without_a_shortcut_runs_as_it_is():
    assert shortcut("uname -m") == "uname -m"



def asked(fact: type, unit: str) -> str:
    """The command pyinfra sends for `fact` of one unit (its "command -v systemctl" guard included)."""
    [command] = load_fact(fact, {"services": [unit], "user_mode": False}, [])[1]
    return command


@pytest.mark.parametrize("fact", [api.SystemdStatus, api.SystemdEnabled])
def test_the_units_pyinfra_asks_one_by_one_are_asked_at_once(fact):
    [together] = units_at_once([asked(fact, "a.service"), None, "uname -m", asked(fact, "b@x.service"), asked(fact, "a.service")])
    assert together.members == (0, 3)  # the second ask of a.service runs alone
    assert "systemctl show --all --property Id --property" in together.command and " a.service b@x.service " in together.command


def test_units_are_asked_at_once_only_when_several_ask_the_same_property():
    assert units_at_once([asked(api.SystemdStatus, "a.service"), asked(api.SystemdEnabled, "b.service")]) == []


def test_an_answer_that_is_not_one_block_per_unit_is_not_split():
    [together] = units_at_once([asked(api.SystemdStatus, "a.service"), asked(api.SystemdStatus, "b.service")])
    assert together.split(0, ["Id=a.service", "SubState=dead", "", "Id=b.service", "SubState=running"], []) == [
        ["Id=a.service", "SubState=dead"],
        ["Id=b.service", "SubState=running"],
    ]
    assert together.split(0, ["Id=a.service", "SubState=dead"], []) is None  # one block for two units
    assert together.split(1, [], ["System has not been booted with systemd"]) is None
    assert together.split(0, ["##PYINFRA_NOCMD##"], []) == [["##PYINFRA_NOCMD##"]] * 2


# --- paths' stats at once, run side by side with pyinfra's commands on real files ------------------


def _alone(command: str) -> tuple[int, list[str], list[str]]:
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    return done.returncode, done.stdout.splitlines(), done.stderr.splitlines()


def test_the_paths_pyinfra_stats_one_by_one_are_stated_at_once_with_the_same_lines(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo")
    odd = ["a space and a 'quote'", "a\nnewline", "$(touch injected)", "-dash"]
    for name in odd:
        (tmp_path / name).write_text("")
    paths = [str(tmp_path / n) for n in ["file", "folder", "link", "dangling", "fifo", "missing", *odd]]
    facts = [api.File, api.Directory, Link]
    commands = [api.raw_command(facts[i % 3]().command(path)) for i, path in enumerate(paths)]
    [together] = paths_at_once(commands)
    assert together.members == tuple(range(len(paths)))
    blocks = together.split(*_alone(together.command))
    assert blocks is not None
    for command, block in zip(commands, blocks):
        assert _alone(command) == (0, block, [])
    assert [bool(block) for block in blocks] == [True] * 5 + [False] + [True] * 4
    assert not (tmp_path / "injected").exists() and not (Path.cwd() / "injected").exists()


def test_only_absolute_paths_asked_twice_or_more_are_stated_at_once():
    def ask(path: str) -> str:
        return api.raw_command(api.File().command(path))

    assert paths_at_once([ask("/a"), ask("~/b"), ask("c")]) == []  # one absolute path: nothing to merge
    [together] = paths_at_once([ask("/a"), None, ask("/a"), "uname -m", ask("/b")])
    assert together.members == (0, 4)  # the second ask of /a runs alone
    lines = [ask("/a"), asked(api.SystemdStatus, "a.service"), ask("/b"), asked(api.SystemdStatus, "b.service")]
    assert [t.members for t in at_once([(line, None) for line in lines])] == [(1, 3), (0, 2)]


def test_an_answer_that_is_not_one_line_per_existing_path_is_not_split():
    [together] = paths_at_once([api.raw_command(api.File().command(p)) for p in ("/a", "/b")])
    assert together.split(0, ["10", "user=root group=root ..."], []) == [["user=root group=root ..."], []]
    assert together.split(0, ["11", "user=root group=root ..."], []) is None  # a path vanished meanwhile
    assert together.split(1, ["11", "user=..."], ["stat: cannot statx '/b'"]) is None
    assert together.split(0, ["1"], []) is None



# --- files' checksums at once, run side by side with pyinfra's commands on real files -------------


def checksum_asked(path: str) -> str:
    return api.raw_command(api.Sha1File().command(path))


def test_the_checksums_pyinfra_asks_one_by_one_are_asked_at_once_with_the_same_lines(tmp_path):
    """Each small regular file's line (a link to one included) is what pyinfra's command prints
    alone; the others are left for it to run alone, as they are asked (a large file: what its
    checksum costs)."""
    files = {"file": "x", "empty": "", "exactly 1 MiB": "x" * api.SMALL_FILE, "larger": "x" * (api.SMALL_FILE + 1)}
    odd = ["a space and a 'quote'", "$(touch injected)", "-dash", "*", "back\\slash", "new\nline"]
    for name, content in {**files, **{name: name for name in odd}}.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "folder").mkdir()
    names = [*files, *odd, "link", "folder", "missing"]
    commands = [checksum_asked(str(tmp_path / name)) for name in names]
    [together] = checksums_at_once(commands)
    assert together.members == tuple(range(len(names)))
    blocks = together.split(*_alone(together.command))
    answered = {name for name, block in zip(names, blocks) if block is not None}
    assert answered == {"file", "empty", "exactly 1 MiB", *odd[:4], "link"}  # sha1sum escapes the last two odd names
    for command, block in zip(commands, blocks):
        if block is not None:
            assert _alone(command) == (0, block, [])
    assert not (tmp_path / "injected").exists() and not (Path.cwd() / "injected").exists()


def test_only_absolute_paths_asked_twice_or_more_are_checksummed_at_once_whatever_their_condition():
    assert checksums_at_once([checksum_asked("/a"), checksum_asked("b"), api.raw_command(api.File().command("/c"))]) == []
    unquoted = checksum_asked("/a").replace("/a", "/$(reboot)")  # not how pyinfra quotes: never merged
    assert checksums_at_once([unquoted, checksum_asked("/b")]) == []
    [together] = checksums_at_once([checksum_asked("/a"), "uname -m", checksum_asked("/a"), checksum_asked("/b")])
    assert together.members == (0, 3) and together.paths == ("/a", "/b")
    stat = api.raw_command(api.File().command("/c"))
    merged = at_once([(checksum_asked("/a"), "[ -f /a ]"), (stat, "[ -e /c ]"), (checksum_asked("/b"), None), (stat, None)])
    assert [t.members for t in merged] == [(0, 2)]  # a stat asked on a condition is not merged
