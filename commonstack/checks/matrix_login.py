"""One login as the Matrix admin, on the host, shared by the Synapse and coturn checks.

The admin's password never leaves the host: the login runs there (AS_ADMIN, with the host's own
Synapse Python), reads the root-only copy the deploy keeps, and reports only outcomes. Every login
is logged out again. Synapse allows an account 5 logins at once, then one every 5.5 minutes: a
check run costs one, whatever number of check modules use it (the outcome is kept per host).
"""

from __future__ import annotations

import base64
import json

from commonstack.stacks.paths import MATRIX_ADMIN_PASSWORD_FILE, SYNAPSE_PYTHON

TURN_PORT = 3478

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


_sessions: dict[str, dict] = {}  # host name -> outcomes: one login per host and check run


def admin_session(host, admin_user_id: str) -> dict:
    """The outcomes of AS_ADMIN on `host`: {"login": "ok" or why, "turn": ..., "allocate": ...}."""
    name = host.backend.get_hostname()
    if name not in _sessions:
        script = base64.b64encode(AS_ADMIN.encode()).decode()
        result = host.run(
            "echo %s | base64 -d | %s - %s %s %s",
            script, SYNAPSE_PYTHON, admin_user_id, MATRIX_ADMIN_PASSWORD_FILE, str(TURN_PORT),
        )  # fmt: skip
        lines = result.stdout.strip().splitlines()
        if result.rc != 0 or not lines:
            return {"login": f"the login check could not run on the host (exit {result.rc}): is {SYNAPSE_PYTHON} there?"}
        _sessions[name] = json.loads(lines[-1])
    return _sessions[name]
