"""A private /24 per test host, its veth pair, and NAT so the host reaches the package mirrors.

Host side of the veth ``10.231.N.1``, container side ``10.231.N.2``. 10.231.0.0/16 overlaps
neither the machine's own network (192.0.2.0/24) nor its resolver (10.255.255.53).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import names, paths
from .commands import run
from .errors import TestHostError
from .processes import Proc

PREFIX = "10.231"


@dataclass(frozen=True)
class Subnet:
    index: int  # the N of 10.231.N.0/24

    @property
    def gateway(self) -> str:
        return f"{PREFIX}.{self.index}.1"

    @property
    def address(self) -> str:
        return f"{PREFIX}.{self.index}.2"


def allocate() -> Subnet:
    """The next /24 no interface or route uses, after the one handed out last.

    The kernel is the record of what is taken: call this under ``paths.MACHINE_LOCK`` and keep
    the lock until ``configure_host_side`` has put the gateway address on the veth. A subnet just
    given back is not handed out again at once: a host that replaces another gets a new address,
    as a new VPS would, and no one mistakes the new host's NAT rules for the old host's leftovers.
    """
    used = run(["ip", "-4", "-o", "addr", "show"]) + run(["ip", "-4", "route", "show", "table", "all"])
    taken = {int(n) for n in re.findall(rf"\b{re.escape(PREFIX)}\.(\d+)\.\d+", used)}
    try:
        last = int(paths.LAST_SUBNET.read_text())
    except (OSError, ValueError):
        last = 0
    for index in [*range(last + 1, 255), *range(1, last + 1)]:
        if index not in taken:
            paths.LAST_SUBNET.write_text(f"{index}\n")
            return Subnet(index)
    raise TestHostError(f"no free test host subnet left in {PREFIX}.0.0/16: run cleanup_stale or down some hosts")


def wait_for_veth(name: str, nspawn: Proc, timeout: float) -> None:
    veth = Path("/sys/class/net") / names.veth(name)
    deadline = time.monotonic() + timeout
    while not veth.exists():
        if not nspawn.alive() or time.monotonic() > deadline:
            console = paths.console_log(name)
            raise TestHostError(f"systemd-nspawn did not create {veth.name} for test host {name}; see {console}")
        time.sleep(0.02)


def configure_host_side(name: str, subnet: Subnet) -> None:
    veth = names.veth(name)
    run(["ip", "addr", "add", f"{subnet.gateway}/24", "dev", veth])
    run(["ip", "link", "set", veth, "up"])


def configure_container_side(init: Proc, subnet: Subnet) -> None:
    """Address host0 from outside: no network manager inside is needed (or trusted under emulation)."""
    netns = ["nsenter", "-t", str(init.pid), "-n"]
    run([*netns, "ip", "addr", "replace", f"{subnet.address}/24", "dev", "host0"])
    run([*netns, "ip", "link", "set", "host0", "up"])
    run([*netns, "ip", "route", "replace", "default", "via", subnet.gateway])


def enable_forwarding() -> None:
    # Left on at teardown: other hosts, or the machine itself, may rely on it.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def _nat_table(name: str) -> str:
    return f"commonstack_{paths.owner_tag()}_{name.replace('-', '_')}"


def add_nat(name: str, subnet: Subnet) -> None:
    """Masquerade the host's subnet; one nft table per host, so teardown is one deletion."""
    cidr = f"{PREFIX}.{subnet.index}.0/24"
    run(
        ["nft", "-f", "-"],
        input=f"""table ip {_nat_table(name)} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {cidr} ip daddr != {cidr} masquerade
    }}
}}
""",
    )


def remove_nat(name: str) -> None:
    if name in nat_owned_names():
        run(["nft", "delete", "table", "ip", _nat_table(name)])


def nat_owned_names() -> set[str]:
    """Hosts of this state dir with an nft table (names hold no '_', so the mapping is exact)."""
    prefix = _nat_table("")
    tables = re.findall(r"^table ip (\S+)$", run(["nft", "list", "tables", "ip"]), re.MULTILINE)
    return {t[len(prefix) :].replace("_", "-") for t in tables if t.startswith(prefix)}


def remove_veth(name: str, timeout: float = 5.0) -> None:
    """Usually going already: the pair dies with the container's network namespace (asynchronously)."""
    veth = Path("/sys/class/net") / names.veth(name)
    deadline = time.monotonic() + timeout
    while veth.exists():
        run(["ip", "link", "delete", veth.name], check=False)  # fails if the kernel got there first
        if time.monotonic() > deadline:
            raise TestHostError(f"cannot remove interface {veth.name}: delete it with 'ip link delete {veth.name}'")
        time.sleep(0.05)
