"""How the cross-cutting checks read what a host says (host.py) and judge what the controller
sees (outside.py): real command outputs in, verdicts out. The outputs marked "test host" were
captured on a deployed test host (systemd-nspawn, cgroup v1); "VPS" ones are a Debian 12 VPS
with Docker (Discourse) and a snap, as df and ss print them there."""

from __future__ import annotations

import socket
import threading

import pytest

from commonstack.checks.host import available_memory, checked_mounts, oom_kills, parse_memory_files
from commonstack.checks.host_state import parse_listeners, public_tcp_listeners
from commonstack.checks.probes import (
    declared_tcp_ports,
    judge_names,
    read_hosts_file,
    site_names,
    stun_answers,
)

GB = 2**30

DF_TEST_HOST = """\
Filesystem     Type     1B-blocks       Avail Mounted on
/dev/vda       ext4  270553174016 74588909568 /
tmpfs          tmpfs   2527653888  2527653888 /tmp
tmpfs          tmpfs      4194304     4194304 /sys
tmpfs          tmpfs      4194304     4194304 /dev
tmpfs          tmpfs   2527653888  2526593024 /dev/shm
tmpfs          tmpfs   5055303680  5055221760 /run
tmpfs          tmpfs      4194304     4194304 /sys/fs/cgroup
tmpfs          tmpfs      5242880     5242880 /run/lock
commonstack-fill tmpfs  8388608      888608 /srv/commonstack-check-fill
"""

DF_VPS = """\
Filesystem     Type     1B-blocks        Avail Mounted on
udev           devtmpfs 1004519424  1004519424 /dev
tmpfs          tmpfs     203571200   202936320 /run
/dev/sda1      ext4    41083600896  4083600896 /
tmpfs          tmpfs    1017847808  1017847808 /dev/shm
/dev/sda15     vfat      129718272   123383808 /boot/efi
/dev/loop0     squashfs   66584576           0 /snap/core20/2015
overlay        overlay 41083600896  4083600896 /var/lib/docker/overlay2/0f3c/merged
/dev/sda1      ext4    41083600896  4083600896 /var/discourse/shared
/dev/sdb       ext4   105089261568 52544630784 /srv/nextcloud data
tmpfs          tmpfs     203567104   203567104 /run/user/1000
"""


def test_the_disk_check_covers_disks_and_data_tmpfs_not_runtime_dirs():
    targets = [m["target"] for m in checked_mounts(DF_TEST_HOST)]
    assert targets == ["/", "/tmp", "/srv/commonstack-check-fill"]


def test_the_disk_check_skips_snaps_docker_layers_and_bind_mounts():
    mounts = {m["target"]: m for m in checked_mounts(DF_VPS)}
    # A bind mount of / (Discourse's shared folder) counts once; a mount point with a space is whole.
    assert list(mounts) == ["/", "/boot/efi", "/srv/nextcloud data"]
    assert mounts["/"]["avail"] / mounts["/"]["size"] < 0.15  # this VPS's root is nearly full


def test_memory_files_parse_kb_bare_values_and_counters():
    files = parse_memory_files(
        "/proc/meminfo:MemTotal:       24684092 kB\n"
        "/proc/meminfo:MemAvailable:   23314208 kB\n"
        "/proc/vmstat:oom_kill 6\n"
        "/sys/fs/cgroup/memory.max:max\n"
        "/sys/fs/cgroup/memory/memory.limit_in_bytes:2147483648\n"
        "/sys/fs/cgroup/memory/memory.oom_control:oom_kill_disable 0\n"
        "/sys/fs/cgroup/memory/memory.oom_control:oom_kill 0\n"
    )
    assert files["/proc/meminfo"] == {"MemTotal": 24684092 * 1024, "MemAvailable": 23314208 * 1024}
    assert files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] == {"": 2147483648}
    assert files["/sys/fs/cgroup/memory/memory.oom_control"] == {"oom_kill_disable": 0, "oom_kill": 0}
    assert "/sys/fs/cgroup/memory.max" not in files  # "max": no limit


TEST_HOST_MEMORY = parse_memory_files(
    "/proc/meminfo:MemTotal:       24684092 kB\n"
    "/proc/meminfo:MemAvailable:   23314208 kB\n"
    "/proc/vmstat:oom_kill 6\n"
    "/sys/fs/cgroup/memory/memory.limit_in_bytes:2147483648\n"
    "/sys/fs/cgroup/memory/memory.usage_in_bytes:239468544\n"
    "/sys/fs/cgroup/memory/memory.stat:total_inactive_file 79335424\n"
    "/sys/fs/cgroup/memory/memory.oom_control:oom_kill 0\n"
)


def test_a_container_has_the_memory_of_its_cgroup_not_of_the_machine():
    total, available = available_memory(TEST_HOST_MEMORY)
    assert total == 2 * GB
    assert available == 2 * GB - 239468544 + 79335424  # its usage, less the page cache it can drop


def test_a_machine_of_its_own_has_its_kernel_memory_and_cgroup_v2_limits_count():
    machine = parse_memory_files("/proc/meminfo:MemTotal: 2000000 kB\n/proc/meminfo:MemAvailable: 150000 kB\n")
    assert available_memory(machine) == (2000000 * 1024, 150000 * 1024)
    limited = parse_memory_files(
        "/proc/meminfo:MemTotal: 8000000 kB\n/proc/meminfo:MemAvailable: 7000000 kB\n"
        "/sys/fs/cgroup/memory.max:1073741824\n/sys/fs/cgroup/memory.current:1000000000\n"
        "/sys/fs/cgroup/memory.stat:inactive_file 10000000\n"
    )
    assert available_memory(limited) == (GB, GB - 1000000000 + 10000000)


def test_oom_kills_are_the_containers_own_in_a_container():
    assert oom_kills(TEST_HOST_MEMORY, in_container=True) == 0  # the machine's 6 are not this host's
    assert oom_kills(TEST_HOST_MEMORY, in_container=False) == 6
    v2 = parse_memory_files("/sys/fs/cgroup/memory.events:oom 4\n/sys/fs/cgroup/memory.events:oom_kill 3\n")
    assert oom_kills(v2, in_container=True) == 3


# Lines of `ss -Hnltup` on a deployed test host (coturn, Caddy, Synapse, PostgreSQL), with lines of
# a VPS added: sshd on both families, a stray program, a resolver and a server on a link's own
# address, one ss names no program of.
SS_TEST_HOST = """\
udp UNCONN 0      0      10.231.216.2:3478 0.0.0.0:* users:(("turnserver",pid=9747,fd=29))
udp UNCONN 0      0         127.0.0.1:3478 0.0.0.0:* users:(("turnserver",pid=9747,fd=24))
udp UNCONN 0      0                 *:443        *:* users:(("caddy",pid=8758,fd=8))
udp UNCONN 0      0             [::1]:3478    [::]:* users:(("turnserver",pid=9747,fd=36))
tcp LISTEN 0      1024      127.0.0.1:3478 0.0.0.0:* users:(("turnserver",pid=9747,fd=23))
tcp LISTEN 0      128       127.0.0.1:2019 0.0.0.0:* users:(("caddy",pid=8758,fd=11))
tcp LISTEN 0      1024   10.231.216.2:5349 0.0.0.0:* users:(("turnserver",pid=9747,fd=33))
tcp LISTEN 0      50        127.0.0.1:8008 0.0.0.0:* users:(("python",pid=9523,fd=15))
tcp LISTEN 0      128         0.0.0.0:22   0.0.0.0:* users:(("sshd",pid=7837,fd=3))
tcp LISTEN 0      128            [::]:22      [::]:* users:(("sshd",pid=7837,fd=4))
tcp LISTEN 0      96        127.0.0.1:5432 0.0.0.0:* users:(("postgres",pid=7010,fd=6))
tcp LISTEN 0      96            [::1]:5432    [::]:* users:(("postgres",pid=7010,fd=5))
tcp LISTEN 0      128               *:443        *:* users:(("caddy",pid=8758,fd=3))
tcp LISTEN 0      128               *:80         *:* users:(("caddy",pid=8758,fd=12))
tcp LISTEN 0      5           0.0.0.0:8899 0.0.0.0:* users:(("python3",pid=10613,fd=3))
tcp LISTEN 0      4096  127.0.0.53%lo:53   0.0.0.0:*
tcp LISTEN 0      511        10.0.0.5:8080 0.0.0.0:*
tcp LISTEN 0      4096  [fe80::1]%eth0:8443    [::]:* users:(("stray",pid=99,fd=3))
"""


def test_listeners_on_loopback_are_not_candidates():
    assert public_tcp_listeners(parse_listeners(SS_TEST_HOST)) == {
        5349: "turnserver", 22: "sshd", 443: "caddy", 80: "caddy", 8899: "python3", 8080: "", 8443: "stray"
    }


def test_listeners_answer_as_a_connection_would_reach_them():
    found = parse_listeners(SS_TEST_HOST)
    reached = {(s.protocol, s.port) for s in found if s.covers("127.0.0.1")}
    assert {("tcp", 5432), ("tcp", 8008), ("tcp", 22), ("tcp", 443), ("udp", 3478), ("udp", 443)} <= reached
    assert ("tcp", 5349) not in reached  # on the public address only
    assert not any(s.port == 5432 and s.everywhere for s in found)
    assert {s.port for s in found if s.everywhere and s.protocol == "tcp"} == {22, 443, 80, 8899}
    assert {s.address for s in found if s.port in (53, 8443)} == {"127.0.0.53", "fe80::1"}  # the link's name dropped
    assert ("udp", "::1", 3478, "turnserver") in {(s.protocol, s.address, s.port, s.program) for s in found}


def test_declared_ports_expand_ranges_and_ignore_udp():
    rules = [
        {"proto": "tcp", "port": "22", "why": "SSH"},
        {"proto": "udp", "port": "443", "why": "HTTP/3"},
        {"proto": "tcp", "port": "3478", "why": "TURN"},
        {"proto": "tcp", "port": "6000-6002", "why": "a range"},
    ]
    assert declared_tcp_ports(rules) == {22, 3478, 6000, 6001, 6002}


def test_hosts_file_lines(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# split horizon\n10.0.0.5 cloud.example.org Matrix.Example.org.\n\n"
                     "2001:db8::5 cloud.example.org  # and IPv6\n")
    assert read_hosts_file(hosts) == {
        "cloud.example.org": {"10.0.0.5", "2001:db8::5"},
        "matrix.example.org": {"10.0.0.5"},
    }
    hosts.write_text("not-an-address cloud.example.org\n")
    with pytest.raises(ValueError):
        read_hosts_file(hosts)


def test_site_names_add_the_matrix_server_name():
    stack = {"hostnames": {"matrix": "matrix.example.org"}, "delegation": "example.org"}
    assert site_names(stack) == ["matrix.example.org", "example.org"]


@pytest.mark.parametrize(
    ("resolved", "own", "problems", "undecidable"),
    [
        # right
        ({"cloud.example.org": {"203.0.113.7"}}, {"203.0.113.7"}, [], []),
        # elsewhere (an old server)
        ({"cloud.example.org": {"198.51.100.9"}}, {"203.0.113.7"},
         ["cloud.example.org points at 198.51.100.9, not at this host (203.0.113.7): "
          "correct its A/AAAA records at your DNS provider"], []),
        # no record
        ({"cloud.example.org": set()}, {"203.0.113.7"},
         ["cloud.example.org does not resolve: add an A record pointing at 203.0.113.7"], []),
        # a stale AAAA next to a right A: IPv6 visitors land elsewhere
        ({"cloud.example.org": {"203.0.113.7", "2001:db8::1"}}, {"203.0.113.7"},
         ["cloud.example.org points at 2001:db8::1, not at this host (203.0.113.7): "
          "correct its A/AAAA records at your DNS provider"], []),
        # a Pi at home behind NAT: a public address cannot be told from here
        ({"cloud.example.org": {"8.8.4.4"}}, {"192.168.1.20"}, [], ["cloud.example.org points at 8.8.4.4"]),
        # ... unless the host itself has a public address
        ({"cloud.example.org": {"8.8.4.4"}}, {"192.168.1.20", "9.9.9.9"},
         ["cloud.example.org points at 8.8.4.4, not at this host (192.168.1.20): "
          "correct its A/AAAA records at your DNS provider"], []),
    ],
)  # fmt: skip
def test_names_are_judged_by_the_hosts_addresses(resolved, own, problems, undecidable):
    address = sorted(own)[0]
    assert judge_names(list(resolved), resolved, own, address) == (problems, undecidable)


def test_names_of_a_reserved_test_domain_may_be_missing():
    assert judge_names(["cloud.try.test"], {"cloud.try.test": set()}, {"10.231.1.2"}, "10.231.1.2") == ([], [])


def test_stun_binding_request_is_answered_by_a_stun_server_only():
    """A tiny STUN responder on loopback stands in for coturn's answer to a binding request."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        request, client = server.recvfrom(2048)
        server.sendto(b"\x01\x01\x00\x00" + request[4:20], client)  # binding success, same transaction

    responder = threading.Thread(target=answer, daemon=True)
    responder.start()
    try:
        assert stun_answers("127.0.0.1", port)
    finally:
        responder.join(timeout=5)
        server.close()
    assert not stun_answers("127.0.0.1", port, attempts=1)  # nothing listens there any more
