"""How fast the CLI answers: `commonstack --help`, and validate + render of the `full` preset.

Run: .venv/bin/python bench/bench_cli.py [--runs N]. Prints medians over N runs (targets:
--help < 0.3 s, validate + render < 0.5 s), each a fresh process as a volunteer would start it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = [sys.executable, "-m", "commonstack"]


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(COMMAND + args, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, COMMONSTACK_INVENTORIES=str(Path(tmp) / "inv"))
        folder = Path(tmp) / "inv" / "bench"
        folder.mkdir(parents=True)
        (folder / "stack.yaml").write_text(
            "preset: full\ngroup: bench\ndomain: bench.example.org\nadmin_email: a@example.org\n"
            "hosts: [{name: vps, address: 203.0.113.7, memory_mb: 4096}]\n"
            "smtp: {host: smtp.example.org}\n"
        )
        timings = {
            "python -c pass (interpreter start)": [timed_python(env) for _ in range(runs)],
            "commonstack --help": [timed(["--help"], env) for _ in range(runs)],
            "commonstack validate (full)": [timed(["validate", "bench"], env) for _ in range(runs)],
            "commonstack render (full)": [
                timed(["render", "bench", "--out", str(Path(tmp) / f"out{i}")], env) for i in range(runs)
            ],
        }
    baseline = statistics.median(timings["python -c pass (interpreter start)"])
    print(f"{'what':40} {'median':>8} {'min':>8}  {'x interpreter start':>20}")
    for what, values in timings.items():
        median = statistics.median(values)
        print(f"{what:40} {median:7.3f}s {min(values):7.3f}s  {median / baseline:19.1f}x")


def timed_python(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
