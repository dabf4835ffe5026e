"""The outside TCP probes (commonstack.checks.probes) against listeners on this machine: the wait
is calibrated to the round trip, and each port is probed once per run, side by side."""

from __future__ import annotations

import socket
import time

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
    assert timeout == probes.MIN_PROBE_TIMEOUT  # loopback answers in microseconds
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
