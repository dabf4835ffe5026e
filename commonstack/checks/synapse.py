"""Health checks of Synapse: it runs the pinned release and answers on loopback and through
HTTPS (client and federation APIs, the .well-known delegation), registration follows the
profile, its signing key and secrets are private, and the admin can log in."""

from __future__ import annotations

import json
import ssl

import pytest

from commonstack.checks.expect import assert_jails_active, assert_sandboxed, require_layer, require_release
from commonstack.checks.host_state import file_states, listens_everywhere, unit_state
from commonstack.checks.probes import https_request
from commonstack.stacks.paths import (
    MATRIX_ADMIN_PASSWORD_FILE,
    SYNAPSE_CONFIG,
    SYNAPSE_DIST_INFO,
    SYNAPSE_SIGNING_KEY,
    SYNAPSE_URL,
    SYNAPSE_VENV,
    synapse_release_of,
)


def _https(stack: dict, context: ssl.SSLContext, name: str, path: str, body: dict | None = None):
    """(status, lower-case headers, parsed JSON or None) of a GET (or a POST of `body`)."""
    data = None if body is None else json.dumps(body).encode()
    try:
        status, headers, raw = https_request(
            stack["address"], name, context, "GET" if body is None else "POST", path, body=data,
            headers={"Content-Type": "application/json"} if data else {}, timeout=15,
        )  # fmt: skip
    except OSError as exc:
        pytest.fail(f"https://{name}{path}: no answer ({exc}); see the caddy checks")
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    return status, headers, document


def test_synapse_runs_the_pinned_release(host, stack):
    require_layer(stack, "synapse")
    service = unit_state(host, stack, "matrix-synapse")
    assert service.is_running, "Synapse is down: `journalctl -u matrix-synapse -n 50` on the host"
    assert service.is_enabled, "Synapse does not start at boot: `systemctl enable matrix-synapse`"
    maps = host.run('grep -qF libjemalloc "/proc/$(systemctl show --property=MainPID --value matrix-synapse)/maps"')
    assert maps.rc == 0, (
        "Synapse runs without jemalloc (its memory grows and is not given back): is libjemalloc2 installed?"
    )
    # The installed release as its package's metadata folder names it (its Python would take 0.06 s
    # of the host's CPU to read the metadata, importing synapse 0.4 s).
    installed = host.run(f"ls -d {SYNAPSE_DIST_INFO}").stdout.splitlines()
    release = synapse_release_of(installed[0]) if installed else None
    require_release(stack["matrix"], release or "", f"Synapse (in {SYNAPSE_VENV})")


def test_synapse_is_healthy_on_localhost_only(host, stack):
    require_layer(stack, "synapse")
    health = host.run("curl -fsS --max-time 10 %s/health", SYNAPSE_URL)
    assert health.rc == 0 and health.stdout.strip() == "OK", (
        f"Synapse's /health on {SYNAPSE_URL} answers {health.stdout.strip() or health.stderr.strip()!r}: "
        "`journalctl -u matrix-synapse -n 50`"
    )
    assert not listens_everywhere(host, "tcp", 8008), "Synapse listens on every address, not loopback only"


def test_client_api_answers_through_https(stack, trust):
    require_layer(stack, "synapse")
    name = stack["matrix"]["hostname"]
    status, _, document = _https(stack, trust, name, "/_matrix/client/versions")
    assert status == 200 and document and document.get("versions"), (
        f"https://{name}/_matrix/client/versions answers {status}: is Caddy proxying /_matrix to 127.0.0.1:8008?"
    )


def test_federation_api_answers_through_https(stack, trust):
    require_layer(stack, "synapse")
    name = stack["matrix"]["hostname"]
    status, _, document = _https(stack, trust, name, "/_matrix/federation/v1/version")
    server = (document or {}).get("server", {})
    assert status == 200 and server.get("name") == "Synapse", (
        f"https://{name}/_matrix/federation/v1/version answers {status}: other servers cannot talk to this one"
    )
    # What the running server reports (a new virtualenv is not running until Synapse restarted).
    require_release(stack["matrix"], (server.get("version") or "").split(" ")[0], "the Synapse answering")


def test_well_known_documents_delegate_to_synapse(stack, trust):
    require_layer(stack, "synapse")
    matrix = stack["matrix"]
    wanted = {
        "server": {"m.server": f"{matrix['hostname']}:443"},
        "client": {"m.homeserver": {"base_url": f"https://{matrix['hostname']}"}},
    }
    for kind, document in wanted.items():
        url = f"https://{matrix['server_name']}/.well-known/matrix/{kind}"
        status, headers, found = _https(stack, trust, matrix["server_name"], f"/.well-known/matrix/{kind}")
        assert status == 200, f"{url} answers {status}: Caddy must serve it on {matrix['server_name']}"
        assert found == document, f"{url} says {found}, not {document}: check /etc/caddy/Caddyfile"
        assert headers.get("content-type", "").startswith("application/json"), f"{url} is not sent as JSON"
        assert headers.get("access-control-allow-origin") == "*", (
            f"{url} has no Access-Control-Allow-Origin: * header: web clients (Element) cannot read it"
        )


def test_registration_follows_the_profile(stack, trust):
    require_layer(stack, "synapse")
    matrix = stack["matrix"]
    # The first step of a registration: it creates nothing, and answers with the policy.
    status, _, document = _https(stack, trust, matrix["hostname"], "/_matrix/client/v3/register", body={})
    document = document or {}
    if matrix["registration"] == "closed":
        assert status == 403 and document.get("errcode") == "M_FORBIDDEN", (
            f"registration is closed in the profile, but Synapse answers {status} to a sign-up: "
            "check enable_registration in /etc/matrix-synapse/homeserver.yaml"
        )
    else:
        stages = {stage for flow in document.get("flows", []) for stage in flow.get("stages", [])}
        assert status == 401 and "m.login.registration_token" in stages, (
            f"registration is by token in the profile, but Synapse offers {sorted(stages) or status}"
        )


def test_signing_key_and_secrets_are_private(host, stack):
    require_layer(stack, "synapse")
    states = file_states(host, SYNAPSE_SIGNING_KEY, SYNAPSE_CONFIG, MATRIX_ADMIN_PASSWORD_FILE)
    key = states.get(SYNAPSE_SIGNING_KEY)
    assert key and key.size > 0, f"{SYNAPSE_SIGNING_KEY} is missing: other servers would no longer trust this one"
    assert (key.user, key.permissions) == ("matrix-synapse", 0o600), f"{SYNAPSE_SIGNING_KEY} must be 0600 matrix-synapse"
    config = states.get(SYNAPSE_CONFIG)
    assert config and (config.user, config.group, config.permissions) == ("root", "matrix-synapse", 0o640), (
        f"{SYNAPSE_CONFIG} must be 0640 root:matrix-synapse"
    )
    password = states.get(MATRIX_ADMIN_PASSWORD_FILE)
    assert password and (password.user, password.permissions) == ("root", 0o600), (
        f"{MATRIX_ADMIN_PASSWORD_FILE} must be 0600 root"
    )


def test_admin_can_log_in(stack, matrix_admin):
    outcome = matrix_admin.get("login", "")
    if outcome.startswith("HTTP 429"):  # Synapse's rc_login: 5 logins, then one every 5.5 minutes
        pytest.skip(f"Synapse rate-limits the admin's logins now ({outcome}): the password was not tried; check again then")
    assert outcome == "ok", (
        f"{stack['matrix']['admin_user_id']} cannot log in ({matrix_admin.get('login')}): its password is "
        "matrix_admin_password in secrets.yaml, unless it was changed in a client since"
    )


def test_synapse_is_sandboxed(host, stack):
    require_layer(stack, "synapse")
    assert_sandboxed(host, stack, "synapse")


def test_matrix_logins_are_guarded_by_fail2ban(host, stack):
    require_layer(stack, "synapse")
    assert_jails_active(host, stack, "synapse")
