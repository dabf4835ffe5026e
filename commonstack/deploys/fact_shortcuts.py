"""Cheaper commands that print what some of pyinfra's fact commands print, byte for byte, for
the fact batches (prefetch.py): the facts and the operations reading them cannot tell.

pyinfra's systemd facts run one `systemctl show` per unit and property (5 ms of the host's CPU
each, 28 of them for a small group); `systemctl show` of several units prints each one's
properties as it would alone, a blank line between them: `units_at_once` asks them together.
Its File, Directory and Link facts run a `stat` per path (34 on a base host, each in a
subshell of its own); one `stat` of every existing path prints each one's line as it would
alone: `paths_at_once` asks them together. Its Sha1File fact (the checksum of each file an
operation puts or templates, asked ahead of need for the small regular ones: 52 on a small-group
host, a fifth of what its plan costs the host's CPU) runs a test, `stat` and `sha1sum` per file:
`checksums_at_once` runs one `find` and one `sha1sum` for all (`at_once`: all three).

pyinfra's Users fact (asked by server.user) runs a dozen processes per account: lastlog, id
twice, grep four times, cut, tr and their subshells, 0.3 s of a host's CPU for its 28 accounts,
a fifth of what a no-op plan costs it. Its shortcut runs each program once.
Where its reading of the account files could differ from what grep and lastlog would print
(names with characters a pattern gives meaning to, backslashes that dash's `echo` would read,
groups from a directory service, a `lastlogin` of BSD's), it runs pyinfra's own command.
tests/unit/test_fact_shortcuts.py runs both on real account files, odd ones included.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from commonstack.deploys import pyinfra_api as api

# When the shortcut may not print what pyinfra's command would: then that command runs.
_USERS_UNSURE = r"""LC_ALL=C grep -qv '^[A-Za-z_][A-Za-z0-9_-]*:' /etc/passwd /etc/group \
  || grep -qs '\\' /etc/passwd /etc/group /etc/shadow \
  || ! grep -Eqs '^group:[[:space:]]+files([[:space:]]+systemd)?[[:space:]]*$' /etc/nsswitch.conf \
  || { ! command -v lastlog >/dev/null && command -v lastlogin >/dev/null; }"""

# For each account in /etc/passwd's order, as pyinfra's loop prints it:
# "PASSWD LINE|PRIMARY GROUP|ALL GROUPS|LASTLOG LINES, SPACES SQUEEZED|SHADOW PASSWORD".
# `lastlog -u NAME` prints its header and the line of the first account with NAME's uid;
# pyinfra keeps those that start with NAME.
# `groups` prints "NAME : GROUPS" for each account it can read, the list `id -Gn NAME` prints
# (coreutils: the same code); an account it cannot read (a malformed line) has none.
_USERS_ONCE = r"""groups -- $(cut -d: -f1 /etc/passwd) 2>/dev/null | awk '
function add(table, key, value) { if (key in table) table[key] = table[key] "\n" value; else table[key] = value }
BEGIN {
  while ((getline line < "/etc/passwd") > 0) {
    split(line, f, ":"); add(entry, f[1], line); names[++n] = f[1]
    if (!(f[1] in uid)) uid[f[1]] = f[3]
    if (!(f[3] in first)) first[f[3]] = f[1]
  }
  while ((getline line < "/etc/shadow") > 0) {
    split(line, f, ":"); if (index(line, ":")) add(password, f[1], f[2])
  }
  while (("lastlog 2>/dev/null" | getline line) > 0) {
    if (++lines == 1) { header = line; continue }
    split(line, f, " "); if (!(f[1] in last)) last[f[1]] = line
  }
}
{ sub(/ : /, " "); if (!($1 in groups)) groups[$1] = substr($0, length($1) + 2) }
END {
  for (k = 1; k <= n; k++) {
    i = names[k]; seen = ""; split(groups[i], g, " ")
    if (index(header, i) == 1) seen = header
    account = first[uid[i]]
    if ((account in last) && index(last[account], i) == 1) seen = (seen == "") ? last[account] : seen "\n" last[account]
    gsub(/  +/, " ", seen); pw = password[i]; sub(/\n+$/, "", pw)  # as $(...) drops final newlines
    printf "%s|%s|%s|%s|%s\n", entry[i], g[1], groups[i], seen, pw
  }
}'"""

USERS = api.Users().command()
_SHORTCUTS = {USERS: f"if {_USERS_UNSURE}; then\n{USERS}\nelse\n{_USERS_ONCE}\nfi"}


def shortcut(command: str) -> str:
    """The command a batch runs to print what `command` prints (itself, mostly)."""
    return _SHORTCUTS.get(command, command)


# The command of pyinfra's SystemdStatus / SystemdEnabled facts for one unit (as a batch runs it).
_UNIT_STATE = re.compile(
    r"if command -v systemctl >/dev/null 2>&1; then \( systemctl show --all --property Id --property (\w+) "
    r"([\w@.:-]+) \); else echo '##PYINFRA_NOCMD##'; fi"
)


@dataclass(frozen=True)
class Together:
    """One command answering several: `members` (indices of the commands it stands for)."""

    command: str
    members: tuple[int, ...]

    def split(self, status: int, stdout: list[str], stderr: list[str]) -> list[list[str] | None] | None:
        """Each member's stdout lines (its status is `status`, its stderr empty), or None for a
        member the answer leaves out (it runs alone if it is asked); None for all of them when the
        answer cannot be split (then each runs alone)."""
        raise NotImplementedError


class UnitsTogether(Together):
    def split(self, status: int, stdout: list[str], stderr: list[str]) -> list[list[str]] | None:
        """One block of properties per unit, a blank line between them."""
        if status != 0 or stderr:
            return None
        if stdout == ["##PYINFRA_NOCMD##"]:
            return [stdout] * len(self.members)
        blocks: list[list[str]] = [[]]
        for line in stdout:
            if line:
                blocks[-1].append(line)
            else:
                blocks.append([])
        if len(blocks) != len(self.members) or not all(block and block[0].startswith("Id=") for block in blocks):
            return None
        return blocks


class PathsTogether(Together):
    def split(self, status: int, stdout: list[str], stderr: list[str]) -> list[list[str]] | None:
        """A line of 0/1, which paths exist (pyinfra's command prints nothing for the others),
        then `stat`'s line of each that does."""
        if status != 0 or stderr or not stdout:
            return None
        exists, lines = stdout[0], iter(stdout[1:])
        if len(exists) != len(self.members) or set(exists) - {"0", "1"} or exists.count("1") != len(stdout) - 1:
            return None
        return [[next(lines)] if bit == "1" else [] for bit in exists]


def units_at_once(commands: list[str | None]) -> list[Together]:
    """The commands (None: not to merge) that ask the same property of one unit each, merged
    into one `systemctl show` per property (when two or more ask it)."""
    asked: dict[str, dict[str, int]] = {}  # property -> {unit: index}
    for index, command in enumerate(commands):
        found = _UNIT_STATE.fullmatch(command or "")
        if found and found[2] not in asked.setdefault(found[1], {}):
            asked[found[1]][found[2]] = index
    return [
        UnitsTogether(
            "if command -v systemctl >/dev/null 2>&1; then ( systemctl show --all --property Id "
            f"--property {prop} {' '.join(units)} ); else echo '##PYINFRA_NOCMD##'; fi",
            tuple(units.values()),
        )
        for prop, units in asked.items()
        if len(units) > 1
    ]


@dataclass(frozen=True)
class ChecksumsTogether(Together):
    """`paths`: each member's path."""

    paths: tuple[str, ...] = ()

    def split(self, status: int, stdout: list[str], stderr: list[str]) -> list[list[str] | None] | None:
        """`sha1sum`'s line of each small regular file, "CHECKSUM  PATH" as it prints it alone;
        the others (missing, large, not a plain file, a name it prints escaped) are not answered."""
        printed = {line[42:]: line for line in stdout if re.fullmatch(r"[0-9a-f]{40}  .*", line)}
        return [[printed[path]] if path in printed else None for path in self.paths]


def _one_path(command: str) -> re.Pattern:
    """What matches `command`, a fact's command for the path "/PATH", for any one path quoted as
    pyinfra quotes it (shlex.quote): that path is the group "path"."""
    quoted = r"""(?:[^\s'"]+|'(?:[^']|'"'"')*')+"""
    pattern = re.escape(command).replace(re.escape("/PATH"), f"(?P<path>{quoted})", 1)
    return re.compile(pattern.replace(re.escape("/PATH"), "(?P=path)"))


# The commands of pyinfra's File, Directory and Link facts, and of its Sha1File fact, for one path.
_STAT = api.raw_command(api.File().command("/PATH"))
_PATH_STATE = _one_path(_STAT)
_LINUX_STAT = re.search(r"stat -c '[^']*'", _STAT)[0]
_CHECKSUM = _one_path(api.raw_command(api.Sha1File().command("/PATH")))


def paths_at_once(commands: list[str | None]) -> list[Together]:
    """The commands (None: not to merge) that ask pyinfra's File, Directory or Link fact of one
    absolute path each, merged into one loop of `test`s (builtins) and one `stat` (when two or
    more ask)."""
    asked = _absolute_paths(_PATH_STATE, commands)
    if len(asked) < 2:
        return []
    loop = (
        f"e=; set --; for p in {' '.join(map(shlex.quote, asked))}; do "
        'if test -e "$p" || test -L "$p"; then e="${e}1"; set -- "$@" "$p"; else e="${e}0"; fi; done; '
        f'echo "$e"; [ $# = 0 ] || {_LINUX_STAT} "$@"'
    )
    return [PathsTogether(loop, tuple(asked.values()))]


def checksums_at_once(commands: list[str]) -> list[Together]:
    """The commands that ask pyinfra's Sha1File fact of one absolute path each, merged into one
    `find` of the regular files of at most SMALL_FILE bytes among them (links followed) and one
    `sha1sum` of those (when two or more ask): the fact's command prints the same line for them."""
    asked = _absolute_paths(_CHECKSUM, commands)
    if len(asked) < 2:
        return []
    small = f"-size -{api.SMALL_FILE // 1024 + 1}k"  # find rounds sizes up to whole KiB
    paths = " ".join(map(shlex.quote, asked))
    command = f"find -L {paths} -maxdepth 0 -type f {small} -exec sha1sum -- {{}} + 2>/dev/null || true"
    return [ChecksumsTogether(command, tuple(asked.values()), tuple(asked))]


def _absolute_paths(asking: re.Pattern, commands: list[str | None]) -> dict[str, int]:
    """{path: index} of the commands that match `asking` for an absolute path quoted as
    shlex.quote quotes it (the first that asks each)."""
    asked: dict[str, int] = {}
    for index, command in enumerate(commands):
        found = asking.fullmatch(command or "")
        path = shlex.split(found["path"]) if found else []
        if len(path) == 1 and path[0].startswith("/") and shlex.quote(path[0]) == found["path"]:
            asked.setdefault(path[0], index)
    return asked


def at_once(lines: list[tuple[str, str | None]]) -> list[Together]:
    """The (command, the shell condition under which it is worth running, or None) that one
    command can answer together. Checksums are merged whatever their condition (a file's is
    asked ahead of need only where it is small, and `find` answers only small files); the
    others only when they are asked unconditionally."""
    unconditional = [line if condition is None else None for line, condition in lines]
    return units_at_once(unconditional) + paths_at_once(unconditional) + checksums_at_once([line for line, _ in lines])
