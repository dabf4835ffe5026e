"""Benchmark the idle memory of PHP-FPM + PostgreSQL + Redis for the small-group profile on a 2 GB host.

    python bench/bench_nextcloud.py [--memory 2G] [--suite bookworm] [--idle 60] [--archive PATH]

Needs root. Boots a local test host (temporary state dir), deploys the small-group preset's
base, PostgreSQL, Redis, Caddy and Nextcloud layers through the CLI, lets it idle, then reads
each process's RSS and PSS (/proc/PID/smaps_rollup: shared pages such as OPcache and
PostgreSQL's shared buffers count once) and compares them with the sizing model
(commonstack/stacks/sizing.py memory_footprint_mb, which budgets the peak, not the idle state).

Without --archive only Nextcloud's prerequisites are deployed (no release here): PHP-FPM then
idles without Nextcloud's code in OPcache. With --archive (nextcloud-32.0.2.tar.bz2, its .asc
next to it) Nextcloud is installed and --requests status.php requests warm it before measuring.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from commonstack import testhosts
from commonstack.testhosts import cgroups
from commonstack.testhosts.files import remove_tree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.stacks import write_group  # noqa: E402

import hostmemory  # noqa: E402  (bench/ is on sys.path when a bench runs)
from scratch import scratch_folder  # noqa: E402

LAYERS = ("--only", "base", "--only", "postgres", "--only", "redis", "--only", "caddy", "--only", "nextcloud")
SERVICES = {"php-fpm": "PHP-FPM", "postgres": "PostgreSQL", "redis-server": "Redis"}
KIB = 1024


def service_of(pid: int) -> str | None:
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    return next((label for prefix, label in SERVICES.items() if comm.startswith(prefix)), None)


def cli(inventories: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))
    return subprocess.run([sys.executable, "-m", "commonstack", *args], capture_output=True, text=True, env=env)


def warm(host, requests: int) -> None:
    command = (
        f"for i in $(seq {requests}); do curl -s -o /dev/null --resolve cloud.bench.test:443:127.0.0.1 "
        "--cacert /var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt "
        "https://cloud.bench.test/status.php; done"
    )
    ssh = ["ssh", "-i", str(host.key_path), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "LogLevel=ERROR", f"root@{host.address}", command]  # fmt: skip
    subprocess.run(ssh, check=True, capture_output=True, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--memory", default="2G", help="the test host's memory limit")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds the stack idles before it is measured")
    parser.add_argument("--archive", type=Path, help="a Nextcloud release (with its .asc) to install for real")
    parser.add_argument("--requests", type=int, default=50, help="status.php requests before the warm measure")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scratch = scratch_folder("bench-nextcloud-")
    if scratch is None:
        return 2
    inventories = scratch / "inventories"
    try:
        host = testhosts.up("benchnc", suite=args.suite, memory=args.memory)
        overrides = {"domain": "bench.test", "admin_email": "admin@bench.test"}
        if args.archive:
            overrides["nextcloud"] = {"archive": str(args.archive.resolve())}
        else:
            overrides["nextcloud"] = {"install": "prerequisites"}
        write_group(inventories, "bench", "small-group", {"server": host}, overrides=overrides)
        started = time.monotonic()
        deployed = cli(inventories, "deploy", "bench", "--yes", *LAYERS)
        deploy_seconds = time.monotonic() - started
        if deployed.returncode != 0:
            print(deployed.stdout[-3000:], deployed.stderr[-2000:], file=sys.stderr)
            return 1
        time.sleep(args.idle)
        idle = hostmemory.processes(host.name, service_of)
        usage = cgroups.memory_usage_bytes(host.name) / KIB / KIB
        warmed = None
        if args.archive and args.requests:
            warm(host, args.requests)
            time.sleep(5)
            warmed = hostmemory.processes(host.name, service_of)
        sizing, model = hostmemory.sizing_model(inventories)
    finally:
        for running in testhosts.list_hosts():
            testhosts.down(running.name)
        remove_tree(scratch)

    state = "Nextcloud installed" if args.archive else "prerequisites only (no release archive)"
    print(f"\n== small-group preset on a {args.memory} {args.suite} test host: {state} ==")
    print(f"first deploy (base, PostgreSQL, Redis, Caddy, Nextcloud): {deploy_seconds:.0f} s")
    print(f"sizing: php_fpm_max_children {sizing['php_fpm_max_children']} (start {sizing['php_fpm_start_servers']}), "
          f"opcache {sizing['opcache_memory_mb']} MB, shared_buffers {sizing['postgres_shared_buffers_mb']} MB, "
          f"max_connections {sizing['postgres_max_connections']}, redis maxmemory {sizing['redis_maxmemory_mb']} MB")
    print(f"{'service':12} {'procs':>5} {'RSS MiB':>9} {'PSS MiB':>9} {'model MiB':>10}")
    keys = {"PHP-FPM": "php_fpm", "PostgreSQL": "postgres", "Redis": "redis"}
    for label, measured in (("idle", idle), (f"after {args.requests} requests", warmed)):
        if measured is None:
            continue
        print(f"-- {label}")
        total_rss = total_pss = 0.0
        for service, key in keys.items():
            m = measured.get(service, {"count": 0, "rss": 0.0, "pss": 0.0})
            total_rss, total_pss = total_rss + m["rss"], total_pss + m["pss"]
            print(f"{service:12} {m['count']:5d} {m['rss']:9.1f} {m['pss']:9.1f} {model.get(key, 0):10d}")
        total_model = sum(model.get(k, 0) for k in keys.values())
        print(f"{'together':12} {'':5} {total_rss:9.1f} {total_pss:9.1f} {total_model:10d}")
    print(f"whole host (cgroup memory usage, page cache included): {usage:.0f} MiB")
    print(json.dumps({"idle": idle, "warmed": warmed, "model": model, "deploy_seconds": round(deploy_seconds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
