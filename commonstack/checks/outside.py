"""Health checks from the controller, as a visitor on the internet sees the host: every hostname
leads to it, the ports its services need answer, and no other port does.

Certificates, HTTPS answers and the HTTP redirect are proxy.py's; the SSH port and the ports
that must never be public (databases, caches) are base.py's.

Names are resolved with this machine's resolver. A hosts file named by the controller setting
`hosts_file` (COMMONSTACK_CHECK_HOSTS_FILE for `commonstack check`) is consulted first, like
/etc/hosts: for split-horizon DNS, and for tests whose names are in no DNS at all.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from commonstack.checks.expect import require_layer

# RFC 2606 / 6761: names under these are never in public DNS (`commonstack try` uses try.test).
RESERVED_TLDS = ("test", "example", "invalid", "localhost")
PROBE_TIMEOUT = 2.0  # seconds: a port the firewall drops never answers; an open one does within this
STUN_BINDING_REQUEST = bytes.fromhex("0001 0000 2112a442") + os.urandom(12)


# --- names ------------------------------------------------------------------------------------


def read_hosts_file(path: str | Path) -> dict[str, set[str]]:
    """/etc/hosts format ("ADDRESS NAME [NAME...]", # comments) -> {name: {addresses}}."""
    names: dict[str, set[str]] = {}
    for line in Path(path).read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = str(ipaddress.ip_address(fields[0]))
        for name in fields[1:]:
            names.setdefault(name.lower().rstrip("."), set()).add(address)
    return names


def resolve(name: str, overrides: dict[str, set[str]]) -> set[str]:
    """The addresses `name` resolves to: from the overrides if there, else the system resolver."""
    if name in overrides:
        return overrides[name]
    try:
        answers = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return set()
    return {str(ipaddress.ip_address(answer[4][0].split("%")[0])) for answer in answers}


def site_names(stack: dict) -> list[str]:
    """Every name Caddy serves on this host: its services' hostnames and the Matrix server name."""
    names = list(stack["hostnames"].values())
    if stack["delegation"] and stack["delegation"] not in names:
        names.append(stack["delegation"])
    return names


def judge_names(
    names: list[str], resolved: dict[str, set[str]], own: set[str], address: str
) -> tuple[list[str], list[str]]:
    """(problems, undecidable) for names resolved to `resolved`, when the host's addresses are `own`.

    A name must resolve, and only to addresses of the host. A host behind NAT (only private
    IPv4 addresses) cannot tell whether a public IPv4 address forwards to it: undecidable,
    unless the profile gave that public address (matrix.turn.external_ip).
    """
    own_ips = [ipaddress.ip_address(a) for a in own]
    has_public_v4 = any(ip.version == 4 and ip.is_global for ip in own_ips)
    problems, undecidable = [], []
    for name in names:
        found = resolved.get(name, set())
        if not found:
            if name.rsplit(".", 1)[-1] not in RESERVED_TLDS:
                problems.append(f"{name} does not resolve: add an A record pointing at {address}")
            continue
        elsewhere = sorted(found - own)
        if not elsewhere:
            continue
        foreign = [ipaddress.ip_address(a) for a in elsewhere]
        if all(ip.version == 4 and ip.is_global for ip in foreign) and not has_public_v4:
            undecidable.append(f"{name} points at {', '.join(elsewhere)}")
            continue
        problems.append(
            f"{name} points at {', '.join(elsewhere)}, not at this host ({address}): "
            "correct its A/AAAA records at your DNS provider"
        )
    return problems, undecidable


def test_every_hostname_points_at_this_host(host, stack, controller):
    require_layer(stack, "caddy")
    overrides = read_hosts_file(controller["hosts_file"]) if controller.get("hosts_file") else {}
    names = site_names(stack)
    own = set(host.check_output("hostname --all-ip-addresses").split())
    own |= resolve(stack["address"], overrides) if not _is_ip(stack["address"]) else {stack["address"]}
    own |= {stack["public_ipv4"]} if stack.get("public_ipv4") else set()
    resolved = {name: resolve(name, overrides) for name in names}
    problems, undecidable = judge_names(names, resolved, own, stack["address"])
    assert not problems, "; ".join(problems)
    if undecidable:
        pytest.skip(
            f"{'; '.join(undecidable)}, a public address, and this host is reached at {stack['address']}: "
            "whether that forwards to it cannot be told from here (set matrix.turn.external_ip, or "
            "check your router's port forwarding)"
        )
    if not any(resolved.values()):
        pytest.skip(
            f"{', '.join(names)} are in no DNS (a reserved test domain): add "
            f"`{stack['address']} {' '.join(names)}` to /etc/hosts to browse them"
        )


# --- ports ------------------------------------------------------------------------------------


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _answering(address: str, ports: list[int]) -> list[int]:
    if not ports:
        return []
    with ThreadPoolExecutor(len(ports)) as pool:
        return [p for p, ok in zip(ports, pool.map(lambda p: _answers(address, p), ports)) if ok]


def test_web_ports_answer_from_outside(stack):
    require_layer(stack, "caddy")
    answering = _answering(stack["address"], [80, 443])
    https = "HTTPS" + (" and Matrix federation" if "matrix" in stack["services"] else "")
    silent = [f"{port} ({'HTTP' if port == 80 else https})" for port in (80, 443) if port not in answering]
    assert not silent, (
        f"port {' and '.join(silent)} does not answer from here: is it open in your provider's firewall? "
        "Is Caddy running (`systemctl status caddy`)?"
    )


def test_turn_answers_from_outside(stack):
    require_layer(stack, "coturn")
    tcp = sorted({int(p["port"]) for p in stack["firewall_ports"]
                  if p["why"].startswith("TURN") and p["proto"] == "tcp"})  # fmt: skip
    answering = _answering(stack["address"], tcp)
    silent = [p for p in tcp if p not in answering]
    assert not silent, (
        f"TURN port(s) {', '.join(map(str, silent))}/tcp do not answer from here: are they open in your "
        "provider's firewall? `systemctl status coturn`"
    )
    assert stun_answers(stack["address"], 3478), (
        "TURN does not answer on UDP port 3478 (calls will fail behind most NATs): is UDP 3478 open in "
        "your provider's firewall? `journalctl -u coturn`"
    )


def stun_answers(address: str, port: int, attempts: int = 3) -> bool:
    """A STUN binding request (RFC 5389), the first thing a calling client sends to TURN."""
    family = socket.AF_INET6 if ipaddress.ip_address(_first_address(address)).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        for _ in range(attempts):  # UDP: a lost datagram is not a closed port
            sock.sendto(STUN_BINDING_REQUEST, (address, port))
            try:
                answer = sock.recv(2048)
            except OSError:
                continue
            return answer[:2] == b"\x01\x01" and answer[8:20] == STUN_BINDING_REQUEST[8:20]
    return False


def test_no_undeclared_port_answers_from_outside(host, stack):
    """What listens on a public address, on a port no service of the host declares, must not answer."""
    declared = declared_tcp_ports(stack["firewall_ports"])
    listening = public_tcp_listeners(host.check_output("ss -Htlnp"))
    # base.py already probes the ports that must never be public.
    candidates = sorted(p for p in listening if p not in declared and p not in stack["never_public"])
    stray = _answering(stack["address"], candidates)
    assert not stray, "; ".join(
        f"port {p} ({listening[p] or 'a program'}) answers from outside, but no service of this host needs it: "
        "stop that program, or remove the rule that opens it from the firewall (`sudo nft list ruleset`)"
        for p in stray
    )


def declared_tcp_ports(firewall_ports: list[dict]) -> set[int]:
    ports: set[int] = set()
    for rule in firewall_ports:
        if rule["proto"] == "tcp":
            first, _, last = str(rule["port"]).partition("-")
            ports.update(range(int(first), int(last or first) + 1))
    return ports


_PROCESS = re.compile(r'users:\(\("([^"]+)"')


def public_tcp_listeners(ss_output: str) -> dict[int, str]:
    """`ss -Htlnp` -> {port: program} of TCP listeners not bound to loopback (program '' unknown)."""
    listeners: dict[int, str] = {}
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        address = address.strip("[]").split("%")[0]
        if not port.isdigit() or (address not in ("*", "") and ipaddress.ip_address(address).is_loopback):
            continue
        program = _PROCESS.search(line)
        listeners.setdefault(int(port), program[1] if program else "")
    return listeners


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _first_address(address: str) -> str:
    return address if _is_ip(address) else socket.getaddrinfo(address, None)[0][4][0]
