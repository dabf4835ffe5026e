"""Benchmark the chat preset on a 1 GB test host: deploy time, idle memory of Synapse + PostgreSQL
(+ coturn, Caddy), and the round trip of a message through Caddy.

    python bench/bench_matrix.py [--memory 1G] [--suite bookworm] [--idle 60] [--messages 50]

Needs root, PyPI (pip on the host, through the controller's CA) and matrix-nio. Boots a local test
host (temporary state dir), deploys the chat preset through the CLI (tls.mode internal), times a
second, no-op deploy, lets Synapse idle, then reads each process's RSS and PSS
(/proc/PID/smaps_rollup: PostgreSQL's shared buffers count once in PSS) and compares them with
the sizing model (stacks/sizing.py memory_footprint_mb, a budget for the peak, not the idle state).

Round trip: a matrix-nio client (the admin, logged in through https://matrix.bench.test) sends a
message and waits for it to come back in its own /sync long-poll: the time a user sees between
"send" and the message showing in their other session. Also the send alone (PUT /send).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from commonstack import testhosts
from commonstack.testhosts import cgroups
from commonstack.testhosts.files import remove_tree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.stacks import write_group  # noqa: E402

import hostmemory  # noqa: E402  (bench/ is on sys.path when a bench runs)
from scratch import scratch_folder  # noqa: E402

KIB = 1024
CADDY_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"


def service_of(pid: int) -> str | None:
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm.startswith("postgres"):
        return "PostgreSQL"
    if comm == "turnserver":
        return "coturn"
    if comm == "caddy":
        return "Caddy"
    if b"synapse.app.homeserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
        return "Synapse"
    return None


def cli(inventories: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))
    return subprocess.run([sys.executable, "-m", "commonstack", *args], capture_output=True, text=True, env=env)


def read_on_host(host, command: str, stdin: str | None = None) -> str:
    ssh = ["ssh", "-i", str(host.key_path), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "LogLevel=ERROR", f"root@{host.address}", command]  # fmt: skip
    return subprocess.run(ssh, check=True, capture_output=True, text=True, timeout=60, input=stdin).stdout


async def round_trips(host, inventories: Path, messages: int) -> tuple[list[float], list[float]]:
    """(send, send-to-sync) seconds of each message, through Caddy."""
    from nio import RoomCreateResponse, RoomSendResponse, SyncResponse

    from tests.integration.matrix_client import Homeserver, logged_in

    server = Homeserver("bench", "bench.test", host, inventories, caddy_root=read_on_host(host, f"cat {CADDY_ROOT}"))
    client = await logged_in(server)
    sends, trips = [], []
    try:
        # Synapse limits a user to 0.2 messages per second (bursts of 10): lift that for this user
        # (admin API, on the host: Caddy does not expose it), or the figures would time the rate limiter.
        lift = (
            "curl -fsS -X POST -H @- -H 'Content-Type: application/json' -d '{\"messages_per_second\": 0}' "
            f"http://127.0.0.1:8008/_synapse/admin/v1/users/{quote(server.admin)}/override_ratelimit"
        )
        read_on_host(host, lift, stdin=f"Authorization: Bearer {client.access_token}\n")
        room = await client.room_create(name="bench")
        assert isinstance(room, RoomCreateResponse), room
        synced = await client.sync(timeout=0)
        assert isinstance(synced, SyncResponse), synced
        since = synced.next_batch
        for number in range(messages):
            body = f"bench message {number} {time.time()}"
            started = time.monotonic()
            sent = await client.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": body})
            assert isinstance(sent, RoomSendResponse), sent
            sends.append(time.monotonic() - started)
            arrived = False
            while not arrived:
                synced = await client.sync(timeout=10000, since=since)
                assert isinstance(synced, SyncResponse), synced
                since = synced.next_batch
                joined = synced.rooms.join.get(room.room_id)
                arrived = joined is not None and any(
                    getattr(event, "body", None) == body for event in joined.timeline.events
                )
            trips.append(time.monotonic() - started)
    finally:
        await client.logout()
        await client.close()
    return sends, trips


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (f"median {statistics.median(values) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, "
            f"min {ordered[0] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--memory", default="1G", help="the test host's memory limit (the profile is sized for it)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds the stack idles before it is measured")
    parser.add_argument("--messages", type=int, default=50, help="messages timed for the round trip")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scratch = scratch_folder("bench-matrix-")
    if scratch is None:
        return 2
    inventories = scratch / "inventories"
    try:
        host = testhosts.up("benchmx", suite=args.suite, memory=args.memory, trust_controller_ca=True)
        memory_mb = cgroups.parse_memory(args.memory)
        overrides = {"domain": "bench.test", "admin_email": "admin@bench.test"}
        write_group(inventories, "bench", "chat", {"server": host}, overrides=overrides, memory_mb=memory_mb)
        started = time.monotonic()
        deployed = cli(inventories, "deploy", "bench", "--yes")
        deploy_seconds = time.monotonic() - started
        if deployed.returncode != 0:
            print(deployed.stdout[-3000:], deployed.stderr[-2000:], file=sys.stderr)
            return 1
        started = time.monotonic()
        again = cli(inventories, "plan", "bench")
        plan_seconds = time.monotonic() - started
        unchanged = "unchanged" in again.stdout
        time.sleep(args.idle)
        idle = hostmemory.processes(host.name, service_of)
        usage = cgroups.memory_usage_bytes(host.name) / KIB / KIB
        sends, trips = asyncio.run(round_trips(host, inventories, args.messages))
        sizing, model = hostmemory.sizing_model(inventories)
    finally:
        for running in testhosts.list_hosts():
            testhosts.down(running.name)
        remove_tree(scratch)

    print(f"\n== chat preset on a {args.memory} {args.suite} test host ==")
    print(f"first deploy (base, PostgreSQL, Caddy, Synapse, coturn; health checks included): {deploy_seconds:.0f} s")
    print(f"plan of a second deploy: {plan_seconds:.1f} s, {'nothing to change' if unchanged else 'CHANGES'}")
    print(f"sizing: synapse cache factor {sizing['synapse_cache_factor']}, shared_buffers "
          f"{sizing['postgres_shared_buffers_mb']} MB, max_connections {sizing['postgres_max_connections']}, "
          f"swap {sizing['swap_mb']} MB")
    print(f"-- idle after {args.idle:.0f} s")
    print(f"{'service':12} {'procs':>5} {'RSS MiB':>9} {'PSS MiB':>9} {'model MiB':>10}")
    keys = {"Synapse": "synapse", "PostgreSQL": "postgres", "coturn": "coturn", "Caddy": "caddy"}
    together_rss = together_pss = 0.0
    for service, key in keys.items():
        m = idle.get(service, {"count": 0, "rss": 0.0, "pss": 0.0})
        if service in ("Synapse", "PostgreSQL"):
            together_rss, together_pss = together_rss + m["rss"], together_pss + m["pss"]
        print(f"{service:12} {m['count']:5d} {m['rss']:9.1f} {m['pss']:9.1f} {model.get(key, 0):10d}")
    print(f"{'Synapse+PG':12} {'':5} {together_rss:9.1f} {together_pss:9.1f} "
          f"{model.get('synapse', 0) + model.get('postgres', 0):10d}")
    print(f"whole host (cgroup memory usage, page cache included): {usage:.0f} MiB")
    print(f"message send (PUT /send through Caddy): {summary(sends)}")
    print(f"message round trip (send until it arrives in /sync): {summary(trips)}")
    print(json.dumps({"idle": idle, "model": model, "deploy_seconds": round(deploy_seconds),
                      "send_median_ms": round(statistics.median(sends) * 1000, 1),
                      "round_trip_median_ms": round(statistics.median(trips) * 1000, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
