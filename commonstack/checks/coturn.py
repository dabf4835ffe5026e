"""Health checks of coturn: it runs with a current copy of Caddy's certificate, accepts the TURN
credentials Synapse hands out, and answers from outside on its TCP and UDP ports."""

from __future__ import annotations

import pytest

from commonstack.checks.expect import assert_sandboxed, require_layer
from commonstack.checks.host_state import listens, unit_state
from commonstack.checks.probes import silent, stun_answers
from commonstack.stacks.paths import COTURN_CERTIFICATE_SCRIPT


def test_turn_credentials_are_handed_out_and_accepted(stack, matrix_admin):
    require_layer(stack, "coturn")
    if matrix_admin.get("login") != "ok":
        pytest.skip("needs the admin's login (see that check)")
    assert matrix_admin.get("turn") == "ok", (
        f"/voip/turnServer gives no TURN credentials ({matrix_admin.get('turn')}): check turn_uris and "
        "turn_shared_secret in /etc/matrix-synapse/homeserver.yaml"
    )
    hostname = stack["matrix"]["hostname"]
    uris = matrix_admin.get("uris", [])
    assert all(f":{hostname}:" in uri for uri in uris) and {u.split(":")[0] for u in uris} == {"turn", "turns"}, (
        f"Synapse hands out TURN URIs {uris}, not turn:/turns: URIs of {hostname}"
    )
    assert matrix_admin.get("allocate") == "ok", (
        f"coturn refuses the credentials Synapse hands out ({matrix_admin.get('allocate')}): "
        "static-auth-secret in /etc/turnserver.conf must equal turn_shared_secret in homeserver.yaml"
    )


def test_coturn_runs_with_caddys_certificate(host, stack):
    require_layer(stack, "coturn")
    assert unit_state(host, stack, "coturn").is_running, "coturn is down: `journalctl -u coturn -n 50` on the host"
    # coturn binds each address of the host; loopback is one of them (the last check probes from outside).
    for protocol, port in (("udp", 3478), ("tcp", 3478), ("tcp", 5349)):
        assert listens(host, protocol, "127.0.0.1", port), (
            f"coturn does not listen on {protocol} 127.0.0.1:{port}: `journalctl -u coturn`"
        )
    state = host.run("%s --check %s", COTURN_CERTIFICATE_SCRIPT, stack["matrix"]["hostname"]).stdout.strip()
    assert state == "current", (
        f"coturn's copy of Caddy's certificate is {state or 'missing'}: TURN over TLS (turns:) fails; "
        "`systemctl start coturn-certificate` and see its journal"
    )
    timer = unit_state(host, stack, "coturn-certificate.timer")
    assert timer.is_running, "the timer that renews coturn's certificate is off"


def test_turn_answers_from_outside(stack):
    require_layer(stack, "coturn")
    tcp = sorted({int(p["port"]) for p in stack["firewall_ports"]
                  if p["why"].startswith("TURN") and p["proto"] == "tcp"})  # fmt: skip
    unanswered = silent(stack["address"], tcp)
    assert not unanswered, (
        f"TURN port(s) {', '.join(map(str, unanswered))}/tcp do not answer from here: are they open in your "
        "provider's firewall? `systemctl status coturn`"
    )
    assert stun_answers(stack["address"], 3478), (
        "TURN does not answer on UDP port 3478 (calls will fail behind most NATs): is UDP 3478 open in "
        "your provider's firewall? `journalctl -u coturn`"
    )


def test_coturn_and_its_certificate_helper_are_sandboxed(host, stack):
    require_layer(stack, "coturn")
    assert_sandboxed(host, stack, "coturn")
