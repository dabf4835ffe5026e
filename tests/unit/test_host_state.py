"""What the checks read of a host in one command (checks/host_state.py), read on this machine
through testinfra's local backend: real files and real listening sockets, the same `stat` and
`ss` a host runs. Units' states from a test host's `systemctl show` (systemd is not this
machine's init)."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat

import pytest
import testinfra

from commonstack.checks import ahead
from commonstack.checks.host_state import (
    LISTENING,
    file_states,
    listeners,
    listens,
    listens_everywhere,
    parse_unit_states,
)


def test_file_states_says_what_stat_says_of_each_path_in_one_command(tmp_path):
    regular = tmp_path / "a file with spaces"
    regular.write_text("12345")
    regular.chmod(0o640)
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    link = tmp_path / "link"
    link.symlink_to(regular)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    host, commands = _counted(testinfra.get_host("local://"))
    asked = [str(p) for p in (regular, folder, link, dangling, tmp_path / "missing", tmp_path / "sock")]

    states = file_states(host, *asked)

    server.close()
    assert len(commands) == 1
    assert set(states) == {str(regular), str(folder), str(link), str(tmp_path / "sock")}  # missing ones left out
    mine = os.stat(regular)
    assert states[str(regular)].permissions == 0o640 and states[str(regular)].size == 5
    assert (states[str(regular)].user, states[str(regular)].group) == (
        pwd.getpwuid(mine.st_uid).pw_name, grp.getgrgid(mine.st_gid).gr_name
    )
    assert states[str(folder)].is_directory and states[str(folder)].permissions == 0o750
    assert states[str(link)] == states[str(regular)]  # a link: what it points to, as testinfra's file does
    assert states[str(tmp_path / "sock")].is_socket and not states[str(tmp_path / "sock")].is_directory
    assert stat.S_ISREG(states[str(regular)].mode)
    assert file_states(host) == {}
    assert file_states(host, f"{regular}/under a file") == {}  # not a folder: missing, as `test -e` says
    with pytest.raises(AssertionError, match="File name too long"):
        file_states(host, str(regular), "/" + "x" * 5000)  # stat failing otherwise is no "missing"


def test_listening_sockets_are_read_once_and_told_apart_by_address():
    loopback = socket.socket()
    loopback.bind(("127.0.0.1", 0))
    loopback.listen()
    everywhere = socket.socket()
    everywhere.bind(("0.0.0.0", 0))
    everywhere.listen()
    datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagrams.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in (loopback, everywhere, datagrams)]
    host, commands = _counted(testinfra.get_host("local://"))
    ahead._shared.pop(ahead._key(host, (LISTENING,)), None)  # read afresh, whatever ran before
    try:
        found = listeners(host)
        assert listens(host, "tcp", "127.0.0.1", ports[0]) and not listens_everywhere(host, "tcp", ports[0])
        assert listens(host, "tcp", "127.0.0.1", ports[1]) and listens_everywhere(host, "tcp", ports[1])
        assert listens(host, "udp", "127.0.0.1", ports[2]) and not listens(host, "tcp", "127.0.0.1", ports[2])
        assert not listens(host, "tcp", "192.0.2.1", ports[0])  # bound to loopback only
        with open("/proc/self/comm") as comm:
            assert {s.program for s in found if s.port in ports} == {comm.read().strip()}
        assert len(commands) == 1  # read once for every check of the run (ahead.shared)
    finally:
        for sock in (loopback, everywhere, datagrams):
            sock.close()


# `systemctl show --property Id --property ActiveState --property UnitFileState -- caddy
# coturn-certificate.timer no-such-unit php8.2-fpm` on a deployed test host, php8.2-fpm stopped
# and disabled by hand.
SYSTEMCTL_SHOW = """\
Id=caddy.service
ActiveState=active
UnitFileState=enabled

Id=coturn-certificate.timer
ActiveState=active
UnitFileState=enabled

Id=no-such-unit.service
ActiveState=inactive
UnitFileState=

Id=php8.2-fpm.service
ActiveState=inactive
UnitFileState=disabled
"""


def test_unit_states_are_read_in_the_order_asked():
    units = ["caddy", "coturn-certificate.timer", "no-such-unit", "php8.2-fpm"]
    states = parse_unit_states(SYSTEMCTL_SHOW, units)
    assert [(states[u].is_running, states[u].is_enabled) for u in units] == [
        (True, True), (True, True), (False, False), (False, False)
    ]
    assert states["no-such-unit"].enabled == ""
    with pytest.raises(AssertionError, match="answered 4 units for 3"):
        parse_unit_states(SYSTEMCTL_SHOW, units[:3])
    with pytest.raises(AssertionError, match="answered coturn-certificate.timer for coturn"):
        parse_unit_states(SYSTEMCTL_SHOW, ["caddy", "coturn", "no-such-unit", "php8.2-fpm"])


def _counted(host):
    """The host, and the list of the commands it runs from now on."""
    commands = []
    run = host.backend.run
    host.backend.run = lambda *args, **kwargs: commands.append(args) or run(*args, **kwargs)
    return host, commands
