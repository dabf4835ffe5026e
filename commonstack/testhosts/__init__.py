"""Local Debian machines (systemd-nspawn) reachable over SSH like a VPS: for ``try`` and the tests.

Each host boots a copy of a cached debootstrap rootfs with systemd as PID 1, in its own network
namespace (``10.231.N.2``, NAT to the package mirrors), with a root login by this state dir's
SSH key and its own pinned host key. Needs root on Linux, systemd-container and debootstrap;
arm64 hosts run under qemu-user-static. Progress is logged to ``commonstack.testhosts``.

    host = up("pi", arch="arm64", memory="2G")
    known_hosts.write_text(known_hosts_line(host) + "\\n")
    ...
    down("pi")
"""

from .errors import TestHostError
from .hosts import cleanup_stale, down, list_hosts, up
from .rootfs import build_rootfs
from .sshkeys import known_hosts_line, ssh_key_path
from .state import TestHost

__all__ = [
    "TestHost",
    "TestHostError",
    "build_rootfs",
    "cleanup_stale",
    "down",
    "known_hosts_line",
    "list_hosts",
    "ssh_key_path",
    "up",
]
