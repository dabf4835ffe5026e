"""Health checks of Matrix: Synapse runs the pinned release and answers on loopback and through
HTTPS (client and federation APIs, the .well-known delegation), registration follows the profile,
the admin can log in, and a logged-in user gets TURN credentials that coturn accepts.

The admin's password never leaves the host: the login runs there (AS_ADMIN, with the host's own
Synapse Python), reads the root-only copy the deploy keeps, and reports only outcomes. Every login
is logged out again. Synapse allows an account 5 logins at once, then one every 5.5 minutes: a
check run costs one.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl

import pytest

from commonstack.checks.expect import require_layer
from commonstack.checks.proxy import trust  # noqa: F401  (a fixture: Caddy's CA where tls.mode is internal)

VENV_PYTHON = "/opt/synapse/venv/bin/python"
ADMIN_PASSWORD_FILE = "/var/lib/commonstack/matrix-admin-password"  # written by deploys/synapse.py
SIGNING_KEY = "/etc/matrix-synapse/signing.key"
CERTIFICATE_SCRIPT = "/usr/local/sbin/commonstack-coturn-certificate"

# Runs on the host: log in as the admin, ask for TURN credentials, try them on coturn (a TURN
# Allocate, RFC 5766, then freed at once), log out. Prints one JSON object of outcomes; never a
# password, token or credential.
AS_ADMIN = r'''
import hashlib, hmac, json, os, socket, struct, sys, urllib.error, urllib.request

BASE, COOKIE = "http://127.0.0.1:8008", 0x2112A442


def call(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except ValueError:
            return error.code, {}


def refusal(status, body):
    text = f"HTTP {status} {body.get('errcode', '')}".strip()
    if body.get("retry_after_ms"):
        text += f" (retry in {body['retry_after_ms'] // 1000 + 1} s)"
    return text


def attribute(kind, value):
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def stun(kind, attributes, key=None):
    body, transaction = b"".join(attributes), os.urandom(12)
    if key is not None:  # MESSAGE-INTEGRITY: HMAC-SHA1 over the message, its length counting it
        head = struct.pack("!HHI", kind, len(body) + 24, COOKIE) + transaction
        body += attribute(0x0008, hmac.new(key, head + body, hashlib.sha1).digest())
    return struct.pack("!HHI", kind, len(body), COOKIE) + transaction + body


def exchange(sock, address, message):
    for _ in range(3):  # UDP: a datagram may be lost
        sock.sendto(message, address)
        try:
            answer = sock.recv(4096)
        except OSError:
            continue
        kind, length = struct.unpack("!HH", answer[:4])
        attributes, offset = {}, 20
        while offset + 4 <= min(len(answer), 20 + length):
            a_kind, a_length = struct.unpack("!HH", answer[offset:offset + 4])
            attributes.setdefault(a_kind, answer[offset + 4:offset + 4 + a_length])
            offset += 4 + a_length + (-a_length % 4)
        return kind, attributes
    raise TimeoutError(f"no answer from coturn on UDP port {address[1]}")


def allocate(address, username, password):
    transport = attribute(0x0019, bytes([17, 0, 0, 0]))  # REQUESTED-TRANSPORT: UDP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        kind, attributes = exchange(sock, address, stun(0x0003, [transport]))
        if kind != 0x0113 or 0x0014 not in attributes or 0x0015 not in attributes:
            return f"coturn did not ask for credentials (STUN message {kind:#06x})"
        realm, nonce = attributes[0x0014], attributes[0x0015]
        key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
        auth = [attribute(0x0006, username.encode()), attribute(0x0014, realm), attribute(0x0015, nonce)]
        kind, attributes = exchange(sock, address, stun(0x0003, [transport, *auth], key))
        if kind != 0x0103:
            error = attributes.get(0x0009, b"\0\0\0\0")
            code = (error[2] & 7) * 100 + error[3]
            return f"coturn refused the credentials: {code} {error[4:].decode(errors='replace')}".strip()
        sock.sendto(stun(0x0004, [attribute(0x000D, struct.pack("!I", 0)), *auth], key), address)
        return "ok"


def main(user_id, password_file, turn_port):
    report = {}
    try:
        with open(password_file) as handle:
            password = handle.read().strip()
    except OSError as error:
        print(json.dumps({"login": f"cannot read {password_file}: {error.strerror}"}))
        return
    login = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
        "initial_device_display_name": "commonstack check",
    }
    try:
        status, body = call("POST", "/_matrix/client/v3/login", login)
    except OSError as error:  # no HTTP answer at all
        print(json.dumps({"login": f"Synapse does not answer on {BASE} ({error})"}))
        return
    finally:
        del password, login
    if status != 200:
        print(json.dumps({"login": refusal(status, body)}))
        return
    report["login"] = "ok"
    token = body["access_token"]
    try:
        status, turn = call("GET", "/_matrix/client/v3/voip/turnServer", token=token)
        if status != 200 or not turn.get("uris"):
            report["turn"] = refusal(status, turn) if status != 200 else "no TURN URIs (turn_uris is empty)"
        else:
            report["turn"] = "ok"
            report["uris"] = turn["uris"]
            report["ttl"] = turn.get("ttl")
            try:
                report["allocate"] = allocate(("127.0.0.1", turn_port), turn["username"], turn["password"])
            except OSError as error:
                report["allocate"] = str(error)
    finally:
        call("POST", "/_matrix/client/v3/logout", {}, token=token)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
'''


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address` for the site `name` (SNI and Host), without asking DNS."""

    def __init__(self, address: str, name: str, context: ssl.SSLContext):
        super().__init__(name, 443, context=context, timeout=15)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def _https(stack: dict, context: ssl.SSLContext, name: str, path: str, body: dict | None = None):
    """(status, lower-case headers, parsed JSON or None) of a GET (or a POST of `body`)."""
    connection = _NamedHTTPSConnection(stack["address"], name, context)
    try:
        data = None if body is None else json.dumps(body)
        connection.request("GET" if body is None else "POST", path, body=data,
                           headers={"Content-Type": "application/json"} if data else {})
        response = connection.getresponse()
        raw = response.read()
    except OSError as exc:
        pytest.fail(f"https://{name}{path}: no answer ({exc}); see the proxy checks")
    finally:
        connection.close()
    headers = {k.lower(): v for k, v in response.getheaders()}
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    return response.status, headers, document


@pytest.fixture(scope="module")
def admin_session(host, stack) -> dict:
    """The outcomes of AS_ADMIN on the host (one login per check run)."""
    require_layer(stack, "synapse")
    script = base64.b64encode(AS_ADMIN.encode()).decode()
    result = host.run(
        "echo %s | base64 -d | %s - %s %s 3478",
        script, VENV_PYTHON, stack["matrix"]["admin_user_id"], ADMIN_PASSWORD_FILE,
    )
    lines = result.stdout.strip().splitlines()
    assert result.rc == 0 and lines, (
        f"the login check could not run on the host (exit {result.rc}): is {VENV_PYTHON} there?"
    )
    return json.loads(lines[-1])


def test_synapse_runs_the_pinned_release(host, stack):
    require_layer(stack, "synapse")
    service = host.service("matrix-synapse")
    assert service.is_running, "Synapse is down: `journalctl -u matrix-synapse -n 50` on the host"
    assert service.is_enabled, "Synapse does not start at boot: `systemctl enable matrix-synapse`"
    version = host.run("%s -c 'import synapse; print(synapse.__version__)'", VENV_PYTHON).stdout.strip()
    wanted = stack["matrix"]["version"]
    assert version == wanted, (
        f"Synapse {version or 'is missing'} in /opt/synapse/venv, not {wanted}: run `commonstack deploy`"
    )
    pid = host.check_output("systemctl show --property=MainPID --value matrix-synapse")
    assert "libjemalloc" in host.run("cat /proc/%s/maps", pid).stdout, (
        "Synapse runs without jemalloc (its memory grows and is not given back): is libjemalloc2 installed?"
    )


def test_synapse_is_healthy_on_localhost_only(host, stack):
    require_layer(stack, "synapse")
    health = host.run("curl -fsS --max-time 10 http://127.0.0.1:8008/health")
    assert health.rc == 0 and health.stdout.strip() == "OK", (
        f"Synapse's /health on 127.0.0.1:8008 answers {health.stdout.strip() or health.stderr.strip()!r}: "
        "`journalctl -u matrix-synapse -n 50`"
    )
    assert not host.socket("tcp://0.0.0.0:8008").is_listening, "Synapse listens on every address, not loopback only"


def test_client_api_answers_through_https(stack, trust):  # noqa: F811
    require_layer(stack, "synapse")
    name = stack["matrix"]["hostname"]
    status, _, document = _https(stack, trust, name, "/_matrix/client/versions")
    assert status == 200 and document and document.get("versions"), (
        f"https://{name}/_matrix/client/versions answers {status}: is Caddy proxying /_matrix to 127.0.0.1:8008?"
    )


def test_federation_api_answers_through_https(stack, trust):  # noqa: F811
    require_layer(stack, "synapse")
    name = stack["matrix"]["hostname"]
    status, _, document = _https(stack, trust, name, "/_matrix/federation/v1/version")
    server = (document or {}).get("server", {})
    assert status == 200 and server.get("name") == "Synapse", (
        f"https://{name}/_matrix/federation/v1/version answers {status}: other servers cannot talk to this one"
    )
    assert server.get("version", "").startswith(stack["matrix"]["version"])


def test_well_known_documents_delegate_to_synapse(stack, trust):  # noqa: F811
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


def test_registration_follows_the_profile(stack, trust):  # noqa: F811
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
    key = host.file(SIGNING_KEY)
    assert key.exists and key.size > 0, f"{SIGNING_KEY} is missing: other servers would no longer trust this one"
    assert (key.user, key.mode) == ("matrix-synapse", 0o600), f"{SIGNING_KEY} must be 0600 matrix-synapse"
    config = host.file("/etc/matrix-synapse/homeserver.yaml")
    assert (config.user, config.group, config.mode) == ("root", "matrix-synapse", 0o640)
    password = host.file(ADMIN_PASSWORD_FILE)
    assert (password.user, password.mode) == ("root", 0o600), f"{ADMIN_PASSWORD_FILE} must be 0600 root"


def test_admin_can_log_in(stack, admin_session):
    assert admin_session.get("login") == "ok", (
        f"{stack['matrix']['admin_user_id']} cannot log in ({admin_session.get('login')}): its password is "
        "matrix_admin_password in secrets.yaml, unless it was changed in a client since"
    )


def test_turn_credentials_are_handed_out_and_accepted(stack, admin_session):
    require_layer(stack, "coturn")
    if admin_session.get("login") != "ok":
        pytest.skip("needs the admin's login (see that check)")
    assert admin_session.get("turn") == "ok", (
        f"/voip/turnServer gives no TURN credentials ({admin_session.get('turn')}): check turn_uris and "
        "turn_shared_secret in /etc/matrix-synapse/homeserver.yaml"
    )
    hostname = stack["matrix"]["hostname"]
    uris = admin_session.get("uris", [])
    assert all(f":{hostname}:" in uri for uri in uris) and {u.split(":")[0] for u in uris} == {"turn", "turns"}, (
        f"Synapse hands out TURN URIs {uris}, not turn:/turns: URIs of {hostname}"
    )
    assert admin_session.get("allocate") == "ok", (
        f"coturn refuses the credentials Synapse hands out ({admin_session.get('allocate')}): "
        "static-auth-secret in /etc/turnserver.conf must equal turn_shared_secret in homeserver.yaml"
    )


def test_coturn_runs_with_caddys_certificate(host, stack):
    require_layer(stack, "coturn")
    assert host.service("coturn").is_running, "coturn is down: `journalctl -u coturn -n 50` on the host"
    # coturn binds each address of the host; loopback is one of them (outside.py probes from outside).
    for socket_spec in ("udp://127.0.0.1:3478", "tcp://127.0.0.1:3478", "tcp://127.0.0.1:5349"):
        assert host.socket(socket_spec).is_listening, f"coturn does not listen on {socket_spec}: `journalctl -u coturn`"
    state = host.run("%s --check %s", CERTIFICATE_SCRIPT, stack["matrix"]["hostname"]).stdout.strip()
    assert state == "current", (
        f"coturn's copy of Caddy's certificate is {state or 'missing'}: TURN over TLS (turns:) fails; "
        "`systemctl start coturn-certificate` and see its journal"
    )
    assert host.service("coturn-certificate.timer").is_running, "the timer that renews coturn's certificate is off"
