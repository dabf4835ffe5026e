"""What the checks read of a host in one command where testinfra's modules run one per question.

testinfra's `host.socket(...).is_listening` runs `ss` for each socket asked about,
`host.service(...)` a `systemctl` for each state and `host.file(...)` a `test` or `stat` for each
property: a dozen commands for a few files. Here the listening sockets, the states of the units
the host's layers run and sshd's settings are read once per host for every check (ahead.shared),
and a check's files in one `stat`. These only read and parse; the checks judge.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from dataclasses import dataclass

from commonstack.checks import ahead

LISTENING = "ss -Hnltup"  # every listening TCP and UDP socket, with its program


def _read_once(host, command: str, *args: str) -> str:
    """What `command` prints on the host, run once for every check of this run (ahead.shared)."""
    answer = ahead.shared(host, command, *args)
    assert answer.rc == 0, f"`{command.split(' %s')[0]}` failed on the host: {answer.stderr.strip()[-300:]}"
    return answer.stdout


@dataclass(frozen=True)
class Listener:
    protocol: str  # "tcp" or "udp"
    address: str  # one address, or "0.0.0.0" / "::" / "*" (every IPv4 / IPv6 / both)
    port: int
    program: str  # "" when ss does not say

    @property
    def everywhere(self) -> bool:
        return self.address in ("0.0.0.0", "::", "*")

    def covers(self, address: str) -> bool:
        """Whether a connection to `address` on this port reaches it."""
        return self.address in (address, "*", "::" if ":" in address else "0.0.0.0")


_PROGRAM = re.compile(r'users:\(\("([^"]+)"')


def parse_listeners(output: str) -> list[Listener]:
    """`ss -Hnltup` -> its listeners (sockets of other protocols left out)."""
    found = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
            continue
        address, _, port = fields[4].rpartition(":")
        address = address.split("%")[0].strip("[]")  # "[fe80::1]%eth0", "127.0.0.53%lo": the link's name dropped
        if not address or not port.isdigit():
            continue
        program = _PROGRAM.search(line)
        found.append(Listener(fields[0], address, int(port), program[1] if program else ""))
    return found


def listeners(host) -> list[Listener]:
    """The host's listening sockets, read once for every check (ahead.shared)."""
    return parse_listeners(_read_once(host, LISTENING))


def listens(host, protocol: str, address: str, port: int) -> bool:
    """Whether something listens on `protocol` port `port` reachable at `address`."""
    return any(s.protocol == protocol and s.port == port and s.covers(address) for s in listeners(host))


def listens_everywhere(host, protocol: str, port: int) -> bool:
    """Whether something listens on `protocol` port `port` on every address (not loopback only)."""
    return any(s.protocol == protocol and s.port == port and s.everywhere for s in listeners(host))


def public_tcp_listeners(found: list[Listener]) -> dict[int, str]:
    """{port: program} of the TCP listeners not bound to loopback (program '' unknown)."""
    public: dict[int, str] = {}
    for listener in found:
        if listener.protocol == "tcp" and (listener.everywhere or not ipaddress.ip_address(listener.address).is_loopback):
            public.setdefault(listener.port, listener.program)
    return public


UNITS = "systemctl show --property Id --property ActiveState --property UnitFileState --"
# The states `systemctl is-active` and `systemctl is-enabled` answer 0 for.
_RUNNING = ("active", "reloading", "refreshing")
_ENABLED = ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated")


@dataclass(frozen=True)
class UnitState:
    active: str  # ActiveState
    # UnitFileState ("" for a unit with no file), as the deploy reads it (pyinfra's SystemdEnabled):
    # systemd's own view, which a link removed by hand changes only at its next daemon-reload.
    enabled: str

    @property
    def is_running(self) -> bool:
        return self.active in _RUNNING

    @property
    def is_enabled(self) -> bool:
        return self.enabled in _ENABLED


def parse_unit_states(output: str, units: list[str]) -> dict[str, UnitState]:
    """`systemctl show` of `units` -> {unit: its state}: a block of properties per unit, in the
    order asked, a blank line between them."""
    blocks = output.strip("\n").split("\n\n")
    assert len(blocks) == len(units), f"`systemctl show` answered {len(blocks)} units for {len(units)}"
    states = {}
    for unit, block in zip(units, blocks):
        properties = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        named = properties.get("Id", "")
        assert named in (unit, f"{unit}.service"), f"`systemctl show` answered {named or 'no unit'} for {unit}"
        states[unit] = UnitState(properties.get("ActiveState", ""), properties.get("UnitFileState", ""))
    return states


def unit_state(host, stack: dict, unit: str) -> UnitState:
    """The state of a unit one of the host's layers runs (the registry's Layer.units), read for
    all of them at once, once for every check."""
    units = sorted({name for layer_units in stack["units"].values() for name in layer_units})
    assert unit in units, f"{unit} is not a unit of a layer of this host (Layer.units)"
    return parse_unit_states(_read_once(host, UNITS + " %s" * len(units), *units), units)[unit]


SSHD_SETTINGS = "sshd -T"


def sshd_settings(host) -> dict[str, str]:
    """The settings sshd runs with ({keyword: value}), read once for every check."""
    return dict(line.split(" ", 1) for line in _read_once(host, SSHD_SETTINGS).splitlines() if " " in line)


@dataclass(frozen=True)
class FileState:
    """What `stat -L` says of a path."""

    mode: int  # st_mode: its kind and permissions
    user: str
    group: str
    size: int

    @property
    def permissions(self) -> int:
        return stat.S_IMODE(self.mode)

    @property
    def is_directory(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_socket(self) -> bool:
        return stat.S_ISSOCK(self.mode)


_MISSING = (": No such file or directory", ": Not a directory")


def file_states(host, *paths: str) -> dict[str, FileState]:
    """{path: its state} of the paths that exist (a link: what it points to, as testinfra's
    `exists` and the services see it), in one command; `stat` failing otherwise is an error."""
    if not paths:
        return {}
    answer = host.run("LC_ALL=C stat -Lc '%%f %%U %%G %%s %%n' --" + " %s" * len(paths), *paths)  # %%: testinfra's quoting
    unexpected = [line for line in answer.stderr.splitlines() if not line.endswith(_MISSING)]
    assert answer.rc in (0, 1) and not unexpected, f"`stat` failed on the host: {answer.stderr.strip()[-300:]}"
    states = {}
    for line in answer.stdout.splitlines():
        fields = line.split(" ", 4)
        if len(fields) == 5 and fields[4] in paths:
            states[fields[4]] = FileState(int(fields[0], 16), fields[1], fields[2], int(fields[3]))
    return states
