"""Benchmark local test hosts: rootfs build time, host-up time, idle memory, hosts up at once.

    python bench/bench_testhosts.py [--runs 5] [--build-runs 1] [--parallel 8] [--suite bookworm] [--arch amd64]

Needs root. Uses a temporary state dir and, for the build, a temporary rootfs cache: running
hosts and the machine's cache are left alone (``--build-runs 0`` times ups from the machine's cache).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from commonstack import testhosts
from commonstack.testhosts import cgroups
from commonstack.testhosts.files import remove_tree
from commonstack.testhosts.paths import CACHE_ENV, STATE_ENV
from commonstack.testhosts.preflight import require_support

MIB = 1024 * 1024
UP_TARGET = 10.0  # seconds


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def process_rss_mib(name: str) -> float:
    """Sum of VmRSS over the host's processes (shared pages count once per process)."""
    total_kib = 0
    for pid in cgroups.pids(name):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total_kib / 1024


def summary(values: list[float], unit: str = "s") -> str:
    spread = f", min {min(values):.2f}, max {max(values):.2f}" if len(values) > 1 else ""
    return f"median {statistics.median(values):.2f} {unit} (n={len(values)}{spread})"


def bench_builds(args: argparse.Namespace, scratch: Path) -> list[float]:
    """Each build into a fresh cache; the ups then use the last one."""
    builds = []
    for run in range(args.build_runs):
        os.environ[CACHE_ENV] = str(scratch / f"cache{run}")
        builds.append(timed(partial(testhosts.build_rootfs, args.suite, args.arch)))
        print(f"rootfs build {run + 1}/{args.build_runs}: {builds[-1]:.1f} s", flush=True)
    return builds


def bench_ups(args: argparse.Namespace) -> dict[str, list[float]]:
    """Hosts one after another: up time, idle memory, down time."""
    figures: dict[str, list[float]] = defaultdict(list)
    for run in range(args.runs):
        name = f"bench{run}"
        figures["up"].append(timed(partial(testhosts.up, name, args.suite, args.arch)))
        time.sleep(args.idle)
        stat = cgroups.memory_stat(name)
        figures["usage"].append(cgroups.memory_usage_bytes(name) / MIB)
        figures["rss"].append(stat["rss"] / MIB)
        figures["cache"].append(stat["cache"] / MIB)
        figures["process_rss"].append(process_rss_mib(name))
        figures["down"].append(timed(partial(testhosts.down, name)))
        print(f"host up {run + 1}/{args.runs}: {figures['up'][-1]:.2f} s", flush=True)
    return figures


def bench_parallel(args: argparse.Namespace) -> float:
    names = [f"benchp{i}" for i in range(args.parallel)]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        seconds = timed(lambda: list(pool.map(partial(testhosts.up, suite=args.suite, arch=args.arch), names)))
        list(pool.map(testhosts.down, names))
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--arch", default="amd64")
    parser.add_argument("--runs", type=int, default=5, help="hosts brought up one after another")
    parser.add_argument("--build-runs", type=int, default=1, help="rootfs builds (about a minute each)")
    parser.add_argument("--parallel", type=int, default=8, help="hosts brought up at once (0: skip)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds a host idles before its memory is read")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the test hosts' progress messages")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="  %(message)s")
    try:
        require_support(args.arch)
    except testhosts.TestHostError as error:
        print(f"cannot benchmark test hosts here: {error}", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="bench-testhosts-", dir="/var/tmp"))
    os.environ[STATE_ENV] = str(scratch / "state")
    try:
        builds = bench_builds(args, scratch)
        testhosts.build_rootfs(args.suite, args.arch)  # the machine's cache, when no build ran
        ups = bench_ups(args) if args.runs else {}
        parallel = bench_parallel(args) if args.parallel else None
    finally:
        for host in testhosts.list_hosts():
            testhosts.down(host.name)
        remove_tree(scratch)

    print(f"\n== test hosts: {args.suite} {args.arch}, {os.cpu_count()} CPUs ==")
    if builds:
        print(f"rootfs build (debootstrap + tarball): {summary(builds)}")
    if ups:
        verdict = "ok" if statistics.median(ups["up"]) <= UP_TARGET else "OVER"
        print(f"host up from the cached rootfs:       {summary(ups['up'])}  [target <= {UP_TARGET:.0f} s: {verdict}]")
        print(f"host down:                            {summary(ups['down'])}")
        print(f"idle host, cgroup memory usage:       {summary(ups['usage'], 'MiB')}")
        print(f"  of which anonymous (rss):           {summary(ups['rss'], 'MiB')}")
        print(f"  of which page cache:                {summary(ups['cache'], 'MiB')}")
        print(f"idle host, sum of process RSS:        {summary(ups['process_rss'], 'MiB')}")
    if parallel is not None:
        print(f"{args.parallel} hosts up at once:                  {parallel:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
