"""How the checks look at a host from this machine, as a visitor on the internet would: TCP and
STUN probes, HTTPS requests sent to the host's address for a site's name (no DNS involved), and
name resolution with an optional hosts file. Used by the check modules; no check lives here."""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

# RFC 2606 / 6761: names under these are never in public DNS (`commonstack try` uses try.test).
RESERVED_TLDS = ("test", "example", "invalid", "localhost")
# How long a TCP probe waits for an answer. A port the firewall drops never answers, so proving it
# closed costs the whole wait: once the host's round trip is known (`calibrate`: the time to
# connect to its SSH port), the wait is a few round trips, within these bounds. A port that must
# answer is given the whole bound before it is called silent (`silent`): a loaded host or network
# can be slower than a few round trips, and only a failing check pays that wait.
PROBE_TIMEOUT = 2.0  # seconds: the bound, and the wait before calibration
MIN_PROBE_TIMEOUT = 0.3  # seconds: a lost SYN is retried by the kernel after 1 s, not sooner
ROUND_TRIPS = 5
STUN_BINDING_REQUEST = bytes.fromhex("0001 0000 2112a442") + os.urandom(12)

_probing = ThreadPoolExecutor(32, thread_name_prefix="probe")
_answers: dict[tuple[str, int], Future] = {}  # (address, port) -> accepts(...): probed once per run
_timeouts: dict[str, float] = {}  # address -> calibrated probe timeout
_lock = threading.Lock()


# --- ports -------------------------------------------------------------------------------------


def accepts(address: str, port: int, timeout: float | None = None) -> bool:
    """Whether a TCP connection to address:port is accepted within `timeout` (by default the
    calibrated wait for `address`, see `calibrate`)."""
    try:
        with socket.create_connection((address, port), timeout=timeout or probe_timeout(address)):
            return True
    except OSError:
        return False


def calibrate(address: str, open_port: int) -> float:
    """Measure the round trip to `address` by connecting to a port that answers (its SSH port);
    TCP probes of that address then wait ROUND_TRIPS of it, within the bounds. Returns the wait."""
    with _lock:
        if address in _timeouts:
            return _timeouts[address]
    started = time.perf_counter()
    reached = accepts(address, open_port, timeout=PROBE_TIMEOUT)
    took = time.perf_counter() - started
    timeout = min(max(ROUND_TRIPS * took, MIN_PROBE_TIMEOUT), PROBE_TIMEOUT) if reached else PROBE_TIMEOUT
    with _lock:
        _timeouts.setdefault(address, timeout)
    return timeout


def probe_timeout(address: str) -> float:
    return _timeouts.get(address, PROBE_TIMEOUT)


def start_probes(address: str, ports: list[int]) -> None:
    """Begin probing these ports in the background: `answering` then waits only for what is left."""
    with _lock:
        for port in ports:
            if (address, port) not in _answers:
                _answers[(address, port)] = _probing.submit(accepts, address, port)


def answering(address: str, ports: list[int]) -> list[int]:
    """The ports of `ports` that accept a connection, probed side by side (once per run)."""
    start_probes(address, ports)
    return [port for port in ports if _answers[(address, port)].result()]


def silent(address: str, ports: list[int]) -> list[int]:
    """The ports of `ports`, which must answer, that do not: those the calibrated wait gave up on
    are asked again side by side, each waiting the whole bound (a SYN lost under load is resent
    after a second)."""
    answered = answering(address, ports)
    unanswered = [port for port in ports if port not in answered]
    again = [_probing.submit(accepts, address, port, PROBE_TIMEOUT) for port in unanswered]
    return [port for port, answer in zip(unanswered, again) if not answer.result()]


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


def declared_tcp_ports(firewall_ports: list[dict]) -> set[int]:
    ports: set[int] = set()
    for rule in firewall_ports:
        if rule["proto"] == "tcp":
            first, _, last = str(rule["port"]).partition("-")
            ports.update(range(int(first), int(last or first) + 1))
    return ports


# --- HTTPS -------------------------------------------------------------------------------------


class _SiteConnection(http.client.HTTPSConnection):
    """HTTPS to `address` for the site `name` (SNI and Host), without asking DNS."""

    def __init__(self, address: str, name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(name, 443, context=context, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


_kept_connections = threading.local()  # a thread's open connections: {(address, name, context, timeout): connection}


def https_request(
    address: str,
    name: str,
    context: ssl.SSLContext,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-case headers, body) of one request to https://NAME/PATH sent to `address`.

    A GET, HEAD or OPTIONS goes through the connection the thread's last one to the same site
    left open, if any (one TLS handshake for a module's requests, not one each), and through a
    new one if the server has closed that meanwhile. Raises OSError (ssl.SSLError included) when
    there is no HTTPS answer.
    """
    key = (address, name, context, timeout)
    kept = _kept_connections.__dict__.setdefault("sites", {})
    connection = kept.pop(key, None)
    if connection and method in ("GET", "HEAD", "OPTIONS"):
        try:
            return _exchange(connection, kept, key, method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            pass  # closed by the server while kept: the request again, on a new connection
    elif connection:
        connection.close()  # a request that must not be sent twice starts on a new connection
    return _exchange(_SiteConnection(address, name, context, timeout), kept, key, method, path, body, headers)


def _exchange(connection, kept: dict, key: tuple, method, path, body, headers) -> tuple[int, dict[str, str], bytes]:
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        answer = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except BaseException:
        connection.close()
        raise
    if response.will_close:
        connection.close()
    else:
        kept[key] = connection
    return answer


# --- names -------------------------------------------------------------------------------------


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


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _first_address(address: str) -> str:
    return address if is_ip(address) else socket.getaddrinfo(address, None)[0][4][0]
