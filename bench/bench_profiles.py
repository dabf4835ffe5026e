"""How long and how much memory `commonstack validate` takes on the worst profiles the fuzz suite
makes (tests/unit/test_profile_fuzz.py): alias bombs, documents at the size limit, deep nesting,
special files. Before issue 17 these took 10-20 s or more, past 1 GB, or never ended.

Run: .venv/bin/python bench/bench_profiles.py [--runs N]. Each run is a fresh process, as a volunteer
starts it; prints the median wall time, the CPU time and the peak RSS of the process, and the ratio
to validating a normal profile (target: every one under a second). A second table times the
loader alone, in this process (CPU time and traced memory peak: what the profile itself costs,
without the interpreter's start and imports).
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
VALID = ("preset: small-group\ngroup: bench\ndomain: example.org\nadmin_email: a@example.org\n"
         "hosts: [{name: vps, address: 203.0.113.7}]\n")


def laughs(levels: int, width: int) -> str:
    lines = ['l0: &l0 ["lol"]'] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return VALID + "\n".join(lines) + f"\ngroup: *l{levels - 1}\n"


CASES = {
    "a normal profile (small-group)": VALID,
    "alias bomb, 9 levels of 10 (10^9 values)": laughs(9, 10),
    "alias bomb, 12 levels of 20": laughs(12, 20),
    "999 kB of comments (under the limit)": VALID + "# " + "x" * 998_000 + "\n",
    "990 kB string in group": VALID.replace("group: bench", "group: b" + "x" * 990_000),
    "3 MB document (over the limit)": VALID + "# " + "x" * 3_000_000 + "\n",
    "400,000 values in a flow list": VALID + "bogus: [" + "1," * 400_000 + "]\n",
    "100,000 levels of nesting": VALID + "bogus: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "3,000 levels of block nesting": VALID + "".join("  " * i + "a:\n" for i in range(3000)),
    "duplicate hosts key": VALID + "hosts: [{name: b, address: 203.0.113.8}]\n",
    "stack.yaml is a FIFO": None,
    "stack.yaml is /dev/zero": "/dev/zero",
}


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, int, int]:
    """(wall s, CPU s, peak RSS kB, exit status) of one fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen(COMMAND + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, COMMONSTACK_INVENTORIES=tmp)
        for number, (what, text) in enumerate(CASES.items()):
            folder = Path(tmp) / f"g{number}"
            folder.mkdir()
            stack = folder / "stack.yaml"
            if text is None:
                os.mkfifo(stack)
            elif text.startswith("/dev/"):
                stack.symlink_to(text)
            else:
                stack.write_text(text)
            results = [run(["validate", folder.name], env) for _ in range(runs)]
            rows.append((what, *(statistics.median(r[i] for r in results) for i in range(3)), results[0][3]))
    baseline = rows[0][1]
    print(f"{'profile':44} {'wall':>7} {'CPU':>7} {'peak RSS':>9} {'exit':>5}  {'x normal':>8}")
    for what, wall, cpu, rss, status in rows:
        print(f"{what:44} {wall:6.2f}s {cpu:6.2f}s {rss / 1024:7.0f}MB {status:5}  {wall / baseline:7.2f}x")
    print()
    print(f"{'profile (load_profile in process)':44} {'CPU':>8} {'traced peak':>12}")
    for what, cpu, peak in in_process(runs):
        print(f"{what:44} {cpu * 1000:6.1f}ms {peak / 1e6:10.1f}MB")


def in_process(runs: int) -> list[tuple[str, float, int]]:
    """(case, median CPU s, traced memory peak) of loading each profile in this process."""
    import tracemalloc

    from commonstack.errors import ProfileError
    from commonstack.stacks.loader import load_profile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, (what, text) in enumerate(CASES.items()):
            stack = Path(tmp) / f"stack{number}.yaml"
            if text is None:
                os.mkfifo(stack)
            elif text.startswith("/dev/"):
                stack.symlink_to(text)
            else:
                stack.write_text(text)
            spent = []
            for _ in range(runs):
                start = time.process_time()
                try:
                    load_profile(stack)
                except ProfileError:
                    pass
                spent.append(time.process_time() - start)
            tracemalloc.start()
            try:
                load_profile(stack)
            except ProfileError:
                pass
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append((what, statistics.median(spent), peak))
    return rows


if __name__ == "__main__":
    main()
