"""The outside TCP probes (commonstack.checks.probes) against listeners on this machine: the wait
is calibrated to the round trip, and each port is probed once per run, side by side."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commonstack.checks import probes


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_a_probe_waits_a_few_round_trips_once_calibrated():
    address = "127.0.0.2"  # an address of its own: calibration is per address
    assert probes.probe_timeout(address) == probes.PROBE_TIMEOUT  # before: the safe bound
    with socket.socket() as ssh:
        ssh.bind((address, 0))
        ssh.listen(1)
        timeout = probes.calibrate(address, ssh.getsockname()[1])
    # Loopback answers in microseconds, a loaded machine in a few milliseconds: the lower bound,
    # or near it, and never the uncalibrated wait.
    assert probes.MIN_PROBE_TIMEOUT <= timeout < 0.5
    assert probes.probe_timeout(address) == timeout


def test_ports_are_probed_side_by_side_and_once_per_run():
    with listener() as one, listener() as two:
        ports = [one.getsockname()[1], two.getsockname()[1]]
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        ports.append(closed.getsockname()[1])
        started = time.perf_counter()
        assert probes.answering("127.0.0.1", ports) == ports[:2]
        assert time.perf_counter() - started < 1
    closed.close()
    # The listeners are gone: this run's answers stand (a check run is a moment's picture).
    assert probes.answering("127.0.0.1", ports) == ports[:2]


def test_a_port_that_must_answer_is_given_the_whole_wait_before_it_is_called_silent():
    """A port whose listener is too busy to answer within the calibrated wait (its queue is full,
    so the kernel drops the SYN and the client resends it a second later) is not silent."""
    address = "127.0.0.4"
    with socket.socket() as ssh, socket.socket() as busy, socket.socket() as queued:
        ssh.bind((address, 0))
        ssh.listen(1)
        assert probes.calibrate(address, ssh.getsockname()[1]) < 0.5  # shorter than the SYN's resend
        busy.bind((address, 0))
        busy.listen(0)  # one connection waiting to be accepted fills its queue
        queued.connect(busy.getsockname())
        port = busy.getsockname()[1]
        assert probes.answering(address, [port]) == []  # the calibrated wait gave up

        def accept_later():
            time.sleep(probes.MIN_PROBE_TIMEOUT)
            busy.accept()[0].close()

        threading.Thread(target=accept_later).start()
        refused = socket.socket()
        refused.bind((address, 0))  # bound, never listening: refused at once
        started = time.perf_counter()
        assert probes.silent(address, [port, refused.getsockname()[1]]) == [refused.getsockname()[1]]
        assert time.perf_counter() - started < probes.PROBE_TIMEOUT
        refused.close()


# --- HTTPS, kept alive --------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path):
    """An HTTPS server for site.test on 127.0.0.3:443 (https_request's port: needs root), with a
    certificate of its own; counts the connections it accepted."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site.test")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("site.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(pem + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    connections = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive unless a response says otherwise

        def setup(self):
            connections.append(self.client_address)
            super().setup()

        def do_GET(self):
            closing = self.path == "/closing"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            if closing:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ok")
            self.close_connection = closing or self.path == "/then-close"  # the latter without saying so

        do_POST = do_GET

        def log_message(self, *args):
            pass

    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.3", 443), Handler)
    except PermissionError:
        pytest.skip("port 443 needs root")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(tmp_path / "cert.pem")
    server.socket = served.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"trust": ssl.create_default_context(cadata=pem.decode()), "connections": connections, "server": server}
    server.shutdown()
    server.server_close()


def test_requests_to_a_site_share_one_connection_until_it_closes(site):
    def get(path="/", method="GET"):
        return probes.https_request("127.0.0.3", "site.test", site["trust"], method, path, timeout=5)

    assert [get()[0] for _ in range(3)] == [200] * 3
    assert len(site["connections"]) == 1  # one TLS handshake for three requests
    get(method="POST")  # never sent on a kept connection: it could be sent twice
    assert len(site["connections"]) == 2
    get("/closing")  # on the POST's connection, which the server then closes: not kept
    assert len(site["connections"]) == 2
    get()
    assert len(site["connections"]) == 3
    # The server closes the kept connection without saying so (an idle timeout): the next
    # request goes again, on a new connection.
    get("/then-close")
    time.sleep(0.1)
    assert get()[2] == b"ok"
    assert len(site["connections"]) == 4
