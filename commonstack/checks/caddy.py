"""Health checks of Caddy, seen from outside as a visitor sees it: every hostname leads to this
host, ports 80 and 443 answer, every site has a valid, fresh certificate and sends the security
headers, and plain HTTP redirects to HTTPS.

Names are resolved with this machine's resolver. A hosts file named by the controller setting
`hosts_file` (COMMONSTACK_CHECK_HOSTS_FILE for `commonstack check`) is consulted first, like
/etc/hosts: for split-horizon DNS, and for tests whose names are in no DNS at all.
"""

from __future__ import annotations

import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from commonstack.checks.expect import assert_sandboxed, require_layer
from commonstack.checks.host_state import unit_state
from commonstack.checks.probes import is_ip, judge_names, read_hosts_file, resolve, silent, site_names

# Public ACME certificates renew 30 days before expiry: 14 days left means renewal is failing.
# Caddy's own CA issues 12-hour certificates and renews them continuously.
MIN_DAYS_LEFT = {"acme": 14.0, "internal": 1 / 24}


def _request(address: str, name: str, port: int, context: ssl.SSLContext | None) -> tuple[str, dict, dict | None]:
    """A GET / for `name` sent to `address` (no DNS involved): status line, headers, certificate."""
    with socket.create_connection((address, port), timeout=10) as raw:
        conn = context.wrap_socket(raw, server_hostname=name) if context else raw
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        certificate = conn.getpeercert() if context else None
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
    return head[0], headers, certificate


@pytest.fixture(scope="module")
def front_pages(stack, trust) -> dict[str, tuple | OSError]:
    """Each site's answer to a GET / over HTTPS, or the error it raised: asked once for the
    certificate and the header checks, every site side by side."""

    def ask(name: str) -> tuple | OSError:
        try:
            return _request(stack["address"], name, 443, trust)
        except OSError as exc:
            return exc

    names = site_names(stack)
    with ThreadPoolExecutor(len(names) or 1) as pool:
        return dict(zip(names, pool.map(ask, names)))


def _answer(front_pages: dict, name: str) -> tuple:
    """A site's answer from `front_pages`; raises its error as the request did."""
    answer = front_pages[name]
    if isinstance(answer, OSError):
        raise answer
    return answer


def test_caddy_is_running(host, stack):
    require_layer(stack, "caddy")
    assert unit_state(host, stack, "caddy").is_running, "Caddy is down: `journalctl -u caddy` on the host"


def test_every_hostname_has_a_valid_fresh_certificate(stack, front_pages):
    for name in site_names(stack):
        try:
            _, _, certificate = _answer(front_pages, name)
        except ssl.SSLCertVerificationError as exc:
            pytest.fail(f"{name}: certificate not valid ({exc.verify_message}); see `journalctl -u caddy`")
        except ssl.SSLError as exc:  # Caddy answers, but refuses the handshake: it has no certificate
            hint = "`journalctl -u caddy`"
            if stack["tls_mode"] == "acme":
                hint = f"does {name} point at {stack['address']} in DNS, are ports 80 and 443 open? {hint}"
            pytest.fail(f"{name}: Caddy has no certificate for it yet ({exc.reason}); {hint}")
        except OSError as exc:
            pytest.fail(f"{name}: no HTTPS answer ({exc}); is port 443 open in your provider's firewall?")
        days_left = (ssl.cert_time_to_seconds(certificate["notAfter"]) - time.time()) / 86400
        assert days_left >= MIN_DAYS_LEFT[stack["tls_mode"]], (
            f"{name}: certificate expires in {days_left:.1f} days; renewal is failing: `journalctl -u caddy`"
        )


def test_every_hostname_sends_security_headers(stack, front_pages):
    for name in site_names(stack):
        try:
            _, headers, _ = _answer(front_pages, name)
        except OSError as exc:  # TLS errors included: the certificate check says what to look at
            pytest.fail(f"{name}: no HTTPS answer to read headers from ({exc}); see the certificate check")
        assert "max-age=" in headers.get("strict-transport-security", ""), f"{name}: no HSTS header"
        assert headers.get("x-content-type-options") == "nosniff", f"{name}: no X-Content-Type-Options"


def test_plain_http_redirects_to_https(stack):
    require_layer(stack, "caddy")
    for name in site_names(stack):
        status, headers, _ = _request(stack["address"], name, 80, None)
        assert status.split()[1] in ("301", "302", "307", "308"), f"{name}: HTTP answers {status}, not a redirect"
        assert headers.get("location", "").startswith(f"https://{name}"), f"{name}: redirects elsewhere"


def test_every_hostname_points_at_this_host(host, stack, controller):
    require_layer(stack, "caddy")
    overrides = read_hosts_file(controller["hosts_file"]) if controller.get("hosts_file") else {}
    names = site_names(stack)
    own = set(host.check_output("hostname --all-ip-addresses").split())
    own |= resolve(stack["address"], overrides) if not is_ip(stack["address"]) else {stack["address"]}
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


def test_web_ports_answer_from_outside(stack):
    require_layer(stack, "caddy")
    https = "HTTPS" + (" and Matrix federation" if "matrix" in stack["services"] else "")
    unanswered = [f"{port} ({'HTTP' if port == 80 else https})" for port in silent(stack["address"], [80, 443])]
    assert not unanswered, (
        f"port {' and '.join(unanswered)} does not answer from here: is it open in your provider's firewall? "
        "Is Caddy running (`systemctl status caddy`)?"
    )


def test_caddy_is_sandboxed(host, stack):
    require_layer(stack, "caddy")
    assert_sandboxed(host, stack, "caddy")


def test_only_tls_1_2_and_1_3_are_offered(stack):
    """A client that speaks nothing newer than TLS 1.1 gets no connection (Caddy's default: 1.2+)."""
    require_layer(stack, "caddy")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    # This machine's OpenSSL refuses TLS 1.0 and 1.1 itself unless told otherwise (security level 0).
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    accepted = []
    for name in site_names(stack):
        try:
            with socket.create_connection((stack["address"], 443), timeout=10) as raw:
                with old.wrap_socket(raw, server_hostname=name) as tls:
                    accepted.append(f"{name} ({tls.version()})")
        except (ssl.SSLError, ConnectionError):
            continue  # refused: as it should be
        except OSError as exc:
            pytest.fail(f"{name}: no answer on port 443 ({exc}); see the certificate check")
    assert not accepted, f"{', '.join(accepted)} accepted a protocol older than TLS 1.2: check /etc/caddy/Caddyfile"
