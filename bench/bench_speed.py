"""Converging and checking at the speed of the network (issue 14), in one run, on fresh test hosts.

Sets up (needs root; --keep DIR keeps the hosts for a later run):
- "one": a small-group host (Nextcloud prerequisites only, as here no release can be fetched),
  deployed fresh in two steps: base + PostgreSQL + Redis + Caddy + Synapse + coturn (timed, per
  operation), then Nextcloud's prerequisites;
- "plain": an identical fresh host where the same Debian packages are apt-get installed and
  Synapse pip-installed into a virtualenv, bare (timed);
- "eight": 8 hosts with the base layer, deployed side by side.

Then prints, medians of --runs (default 5), each command a fresh `commonstack` process, with
Python's bytecode caches on, as an installed kit has them:
- no-op `plan`, no-op `deploy --yes --no-check` and `check` of "one", of one host of "eight" and
  of all 8, with the remote commands each plan read its facts with (targets: <= 1.5 s, <= 10
  commands, 8 hosts <= 2x one; check <= 2 s, 8 hosts <= 1.5x one), each host's fact commands
  remembered from its previous plan (deploys/fact_memory.py), as on a volunteer's re-runs;
- a no-op `plan` of "one" with nothing remembered (a discovery pass, as after a deploy that
  changed the host);
- each as a multiple of a bare `ssh HOST true` round trip (a fresh connection);
- the fresh deploy versus the bare install (target <= 1.2x), and its slowest operations;
- `commonstack --help` (< 0.15 s) and validate + render of `full` (`render`, which validates
  first; < 0.5 s), and `validate` alone;
- where a plan's and a check's time goes: the controller's CPU, the hosts' CPU (their cgroups;
  on real hosts that work runs elsewhere), and a plan's stages (in this process).

The test hosts share this machine's CPUs with the controller: the load average is printed with
the figures. Run: .venv/bin/python bench/bench_speed.py [--runs 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commonstack import testhosts  # noqa: E402
from commonstack.inventories.groups import group  # noqa: E402
from commonstack.stacks.layers import layer  # noqa: E402
from commonstack.stacks.versions import versions  # noqa: E402
from tests.integration.stacks import cli, write_group  # noqa: E402

MATRIX = ("base", "postgres", "redis", "caddy", "synapse", "coturn")
ONE, PLAIN, EIGHT = "spone", "spplain", [f"speight{i}" for i in range(1, 9)]
PREREQUISITES = {"nextcloud": {"install": "prerequisites"}}
FACTS_READ = re.compile(r"(\S+): facts read with (\d+) remote commands")


def only(*layers: str) -> list[str]:
    return [arg for name in layers for arg in ("--only", name)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the hosts and groups in DIR (reused next time)")
    options = parser.parse_args()
    # As an installed kit runs (pip compiles its bytecode; Python caches what it compiles): this
    # machine's environment sets PYTHONDONTWRITEBYTECODE, which makes every command compile the
    # kit's modules again (and pytest rewrite the checks' asserts again), 0.1-0.15 s each.
    print(f"Python's bytecode caches: on (PYTHONDONTWRITEBYTECODE was {os.environ.pop('PYTHONDONTWRITEBYTECODE', 'unset')})")
    sys.dont_write_bytecode = False  # this process's stages too
    folder = options.keep or Path(tempfile.mkdtemp(prefix="bench-speed-"))
    os.environ.setdefault("COMMONSTACK_TESTHOSTS_DIR", str(folder / "testhosts"))
    os.environ["XDG_STATE_HOME"] = str(folder / "state")  # what the commands remember, kept here
    inventories = folder / "inventories"
    loads = [os.getloadavg()[0]]
    try:
        fresh = set_up(inventories)
        loads.append(os.getloadavg()[0])
        measure(inventories, options.runs, fresh, loads)
    finally:
        if not options.keep:
            for name in [ONE, PLAIN, *EIGHT]:
                testhosts.down(name)


# --- setting up ---------------------------------------------------------------------------------


def set_up(inventories: Path) -> dict | None:
    """Hosts and groups (unless kept from a run before); the fresh deploy's figures, if made."""
    done = inventories / "set-up"
    running = {h.name for h in testhosts.list_hosts() if h.status == "running"}
    if {ONE, PLAIN, *EIGHT} <= running and done.exists():
        return None
    with ThreadPoolExecutor(5) as pool:  # threads, before anything patches them (gevent)
        hosts = dict(zip([ONE, PLAIN, *EIGHT], pool.map(_host_up, [ONE, PLAIN, *EIGHT])))
    write_group(inventories, "one", "small-group", {"server": hosts[ONE]}, overrides=PREREQUISITES)
    write_group(inventories, "eight", "chat", {f"h{i}": hosts[name] for i, name in enumerate(EIGHT, 1)})
    # The fresh deploy and the bare install side by side: the same load on both.
    with ThreadPoolExecutor(1) as pool:
        bare = pool.submit(timed, lambda: ssh(hosts[PLAIN], bare_install()))
        fresh = fresh_deploy(inventories)
        fresh["bare"] = bare.result()
    eight = cli(inventories, "deploy", "eight", "--yes", "--no-check", *only("base"))
    assert eight.returncode == 0, eight.stdout + eight.stderr
    rest = cli(inventories, "deploy", "one", "--yes", "--no-check")  # and Nextcloud's prerequisites
    assert rest.returncode == 0, rest.stdout + rest.stderr
    done.touch()
    return fresh


CLI = [sys.executable, "-m", "commonstack"]


def _env(inventories: Path) -> dict:
    return dict(os.environ, COMMONSTACK_INVENTORIES=str(inventories))


def _host_up(name: str):
    return testhosts.up(name, memory="2G" if name in (ONE, PLAIN) else "1G", trust_controller_ca=True)


def fresh_deploy(inventories: Path) -> dict:
    """`commonstack deploy --no-check` of the Matrix layers on the fresh host, each operation
    timed from the progress lines it prints as it goes."""
    command = [*CLI, "deploy", "one", "--yes", "--no-check", *only(*MATRIX)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=_env(inventories), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
    marks = [(time.perf_counter(), line.strip()) for line in process.stderr]
    output = process.stdout.read()
    assert process.wait() == 0, output + "".join(m for _, m in marks)
    total = time.perf_counter() - started
    steps = [(later - at, message.removeprefix("operation: ")) for (at, message), (later, _) in zip(marks, marks[1:])
             if message.startswith("operation: ")]  # fmt: skip
    return {"deploy": total, "slowest": sorted(steps, reverse=True)[:6]}


def bare_install() -> str:
    """The same packages and Synapse, installed by hand: one apt transaction, one pip install."""
    names = {"postgresql": "15"}
    packages = [p.format(**names) for name in MATRIX for p in layer(name).packages]
    synapse = versions().synapse.version
    return ("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
            f"{' '.join(packages)} >/dev/null && python3 -m venv /opt/synapse/venv && /opt/synapse/venv/bin/pip "
            f"install -q --disable-pip-version-check --no-cache-dir 'matrix-synapse[postgres]=={synapse}'")  # fmt: skip


def ssh_command(host, command: str) -> list[str]:
    """ssh to a test host as root with its key, its host key pinned (a known_hosts file of its own)."""
    known = Path(tempfile.mkstemp(prefix="bench-known-")[1])
    known.write_text(testhosts.known_hosts_line(host) + "\n")
    return ["ssh", "-i", str(host.key_path), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", f"root@{host.address}", command]  # fmt: skip


def ssh(host, command: str) -> str:
    command_line = ssh_command(host, command)
    try:
        return subprocess.run(command_line, check=True, capture_output=True, text=True).stdout
    finally:
        Path(command_line[4].split("=", 1)[1]).unlink()


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# --- measuring ----------------------------------------------------------------------------------


def measure(inventories: Path, runs: int, fresh: dict | None, loads: list[float]) -> None:
    hosts = {h.name: h for h in testhosts.list_hosts()}
    cases = {
        "one (small-group)": ("one", [], hosts[ONE]),
        "one host of eight": ("eight", [*only("base"), "--host", "h1"], hosts[EIGHT[0]]),
        "eight hosts": ("eight", only("base"), None),
    }
    commands = {"plan": ["plan"], "deploy": ["deploy", "--yes", "--no-check"], "check": ["check"]}
    times = {(case, what): [] for case in cases for what in commands}
    remote: dict[str, list[int]] = {case: [] for case in cases}
    cpu = {(case, what): [] for case in cases for what in commands}
    round_trips = [timed(lambda: ssh(hosts[ONE], "true")) for _ in range(runs)]
    anew: list[float] = []  # plans of "one" with nothing remembered
    anew_remote: list[int] = []
    for _ in range(runs):  # interleaved, so that other load on the machine affects each figure alike
        shutil.rmtree(group("one", inventories).state_folder / "fact-commands", ignore_errors=True)
        started = time.perf_counter()
        result = cli(inventories, "plan", "one", timeout=600)
        anew.append(time.perf_counter() - started)
        anew_remote.append(no_op_plan_commands(result))
        for case, (group_name, extra, _) in cases.items():
            for what, command in commands.items():
                controller, on_hosts = _controller_cpu(), _hosts_cpu()
                started = time.perf_counter()
                result = cli(inventories, *command, group_name, *extra, timeout=600)
                times[(case, what)].append(time.perf_counter() - started)
                cpu[(case, what)].append((_controller_cpu() - controller, _hosts_cpu() - on_hosts))
                assert result.returncode == 0 or (what == "check" and result.returncode == 1), result.stdout + result.stderr
                if what == "plan":
                    remote[case].append(no_op_plan_commands(result))
        loads.append(os.getloadavg()[0])

    rtt = statistics.median(round_trips)
    print(f"bare `ssh host true` (a fresh connection): {rtt:.3f} s (median of {runs})\n")
    print(f"{'':20} {'':7} {'median':>7} {'x ssh':>6} {'remote cmds':>11} {'CPU: controller':>16} {'hosts':>6}   runs")
    for case in cases:
        for what in commands:
            values = times[(case, what)]
            median = statistics.median(values)
            count = f"{statistics.median(remote[case]):.0f}" if what == "plan" else ""
            controller = statistics.median(c for c, _ in cpu[(case, what)])
            on_hosts = statistics.median(h for _, h in cpu[(case, what)])
            print(f"{case:20} {what:7} {median:6.2f}s {median / rtt:5.1f}x {count:>11} {controller:15.2f}s "
                  f"{on_hosts:5.2f}s   {[round(v, 2) for v in values]}")  # fmt: skip
    for what, target in (("plan", 2.0), ("deploy", 2.0), ("check", 1.5)):
        one = statistics.median(times[("one host of eight", what)])
        print(f"8 hosts / one of them, {what}: {statistics.median(times[('eight hosts', what)]) / one:.2f}x "
              f"(target <= {target}x)")
    # The 8 hosts run on this machine's CPUs, with the controller: the least that allows.
    cpus = len(os.sched_getaffinity(0))
    for what in ("plan", "check"):
        one = statistics.median(times[("one host of eight", what)])
        eight_controller = statistics.median(c for c, _ in cpu[("eight hosts", what)])
        eight_cpu = eight_controller + statistics.median(h for _, h in cpu[("eight hosts", what)])
        print(f"  8 hosts' {what}: {eight_cpu:.2f} s of CPU on {cpus} CPUs, at least {eight_cpu / cpus:.2f} s here "
              f"({eight_cpu / cpus / one:.2f}x one host); the controller's share alone, {eight_controller:.2f} s, at "
              f"least {eight_controller / cpus:.2f} s ({eight_controller / cpus / one:.2f}x) where each host has CPUs "
              "of its own")  # fmt: skip
    print(f"one (small-group) plan with nothing remembered: {statistics.median(anew):.2f} s, "
          f"{statistics.median(anew_remote):.0f} remote commands   {[round(v, 2) for v in anew]}")  # fmt: skip
    print("targets: plan and deploy <= 1.5 s with <= 10 remote commands; check <= 2 s (one small-group host)\n")

    if fresh:
        ratio = fresh["deploy"] / fresh["bare"]
        print(f"fresh deploy of {', '.join(MATRIX)}: {fresh['deploy']:.1f} s; bare apt-get + pip install of the "
              f"same: {fresh['bare']:.1f} s; ratio {ratio:.2f}x (target <= 1.2x)")  # fmt: skip
        print("  its slowest operations: " + "; ".join(f"{name} {took:.1f} s" for took, name in fresh["slowest"]))
    else:
        print("fresh deploy: not measured (hosts kept from an earlier run)")
    cli_figures()
    plan_stages(inventories)
    check_stages(inventories)
    print(f"\nload average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs")


def no_op_plan_commands(result: subprocess.CompletedProcess[str]) -> int:
    """The remote commands a plan that found nothing to change read its facts with (the most of a host)."""
    assert "0 of" in result.stdout and "would change" in result.stdout, result.stdout + result.stderr
    return max(int(n) for _, n in FACTS_READ.findall(result.stderr))


def cli_figures() -> None:
    """`commonstack --help` and validate + render of `full` (bench_cli.py has more)."""
    import bench_cli

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, COMMONSTACK_INVENTORIES=str(Path(tmp) / "inv"))
        folder = Path(tmp) / "inv" / "bench"
        folder.mkdir(parents=True)
        (folder / "stack.yaml").write_text(
            "preset: full\ngroup: bench\ndomain: bench.example.org\nadmin_email: a@example.org\n"
            "hosts: [{name: vps, address: 203.0.113.7, memory_mb: 4096}]\nsmtp: {host: smtp.example.org}\n"
        )
        helps = [bench_cli.timed(["--help"], env) for _ in range(7)]
        validate = [bench_cli.timed(["validate", "bench"], env) for _ in range(7)]
        # `render` reads and validates the profile, then renders every file: both, in one command.
        render = [bench_cli.timed(["render", "bench", "--out", str(Path(tmp) / f"o{i}")], env) for i in range(7)]
    print(f"commonstack --help {statistics.median(helps):.3f} s (target < 0.15 s); validate + render of full "
          f"(`render`, which validates first) {statistics.median(render):.2f} s (target < 0.5 s); "
          f"`validate` alone {statistics.median(validate):.2f} s")  # fmt: skip


def plan_stages(inventories: Path) -> None:
    """Where a no-op plan of the small-group host spends its time, stage by stage (this process),
    then the 8 hosts' (pyinfra loaded already)."""
    stages: list[str] = []

    class Stages(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("stage "):
                stages.append(record.getMessage().removeprefix("stage "))

    from commonstack.deploys.early_batch import early_batches

    one = group("one", inventories)
    cpu, started = time.process_time(), time.perf_counter()
    with early_batches(one, (), (), purge=False) as early:  # as the CLI sends it, before the import
        sent = (time.perf_counter() - started, time.process_time() - cpu)
        from commonstack.deploys.converge import GroupConverger

        imports = (time.perf_counter() - started - sent[0], time.process_time() - cpu - sent[1])
        logger = logging.getLogger("commonstack.deploys")
        logger.addHandler(Stages())
        logger.setLevel(logging.DEBUG)
        GroupConverger(one, early=early).plan()
    print(f"a no-op plan of the small-group host, by stage (wall / CPU of this process): the remembered batch "
          f"sent {sent[0]:.2f} / {sent[1]:.2f} s; imports {imports[0]:.2f} / {imports[1]:.2f} s; "
          + "; ".join(stages))  # fmt: skip
    stages.clear()
    eight = group("eight", inventories)
    with early_batches(eight, (), ("base",), purge=False) as early:
        time.sleep(imports[0])  # the batches run while pyinfra would load
        GroupConverger(eight, only=frozenset({"base"}), early=early).plan()
    print("the same for the 8 hosts, their batches given the imports' time: "
          + "; ".join(stage for stage in stages if not stage.startswith("remembered on ")))  # fmt: skip


def check_stages(inventories: Path) -> None:
    """Where a check of the small-group host spends its time (in this process, the profile loaded
    first: the CLI starts pytest before it loads the profile, and its steps after are these)."""
    from commonstack.checks.group import check_group, sized_plans, start_group_checks
    from commonstack.inventories.secrets import current_secrets
    from commonstack.inventories.targets import host_targets

    one = group("one", inventories)
    profile = one.load()
    targets, secrets = host_targets(one, profile, ()), current_secrets(one.secrets_file, profile)
    host = next(h for h in testhosts.list_hosts() if h.name == ONE)
    before = _last_pid(host)
    first_pid = _last_pid(host)
    reading = first_pid - before  # the processes a reading starts itself
    marks = [time.perf_counter()]
    started = start_group_checks(targets, secrets)
    marks.append(time.perf_counter())
    plans, unusable = sized_plans(one, profile, secrets, started)
    marks.append(time.perf_counter())
    results = check_group(targets, plans, secrets, unreachable=unusable, started=started)
    marks.append(time.perf_counter())
    processes = _last_pid(host) - first_pid - reading
    took = [later - at for at, later in zip(marks, marks[1:])]
    print(f"a check of the small-group host, by stage: pytest started {took[0]:.2f} s; the SSH connection "
          f"opened, saying what the host is, and the host sized meanwhile {took[1]:.2f} s; the {len(results)} "
          f"checks {took[2]:.2f} s more")
    slowest = sorted(results, key=lambda r: r.seconds, reverse=True)[:6]
    print(f"  the checks took {sum(r.seconds for r in results):.2f} s together; the slowest: "
          + "; ".join(f"{r.layer} {r.check} {r.seconds:.2f} s" for r in slowest))
    print(f"  the host started {processes} processes for them" if processes > 0 else
          "  the host's process ids wrapped around during the checks: no count of its processes")  # fmt: skip
    command_round_trips(targets)


def command_round_trips(targets) -> None:
    """A command (`uname -s`) through the checks' shell (checks/shell.py) and through testinfra's
    own ssh backend (an `ssh` per command), both over one shared connection; medians of 50."""
    import testinfra

    import commonstack.checks.shell  # noqa: F401  (registers shell://)
    from commonstack.inventories.openssh import ssh_config

    folder = Path(tempfile.mkdtemp(prefix="bench-shell-", dir="/tmp"))  # short: a socket path's limit
    config = folder / "ssh_config"
    config.write_text(ssh_config(targets[:1], control_dir=folder))
    figures = {}
    for kind in ("shell", "ssh"):
        host = testinfra.get_host(f"{kind}://{targets[0].name}", ssh_config=str(config))
        host.run("true")
        figures[kind] = statistics.median(timed(lambda: host.run("uname -s")) for _ in range(50))
    subprocess.run(["ssh", "-F", str(config), "-O", "exit", targets[0].name], capture_output=True)
    shutil.rmtree(folder)
    print(f"  a command through the checks' shell {figures['shell'] * 1000:.1f} ms, through an `ssh` each "
          f"{figures['ssh'] * 1000:.1f} ms ({figures['ssh'] / figures['shell']:.1f}x)")


def _last_pid(host) -> int:
    """The last process id the host handed out (in its own namespace: /proc/loadavg's last field)."""
    return int(ssh(host, "cat /proc/loadavg").split()[-1])


def _controller_cpu() -> float:
    """CPU seconds of this process's finished children: the CLI, ssh, pytest and its workers."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _hosts_cpu() -> float:
    """CPU seconds the bench's test hosts spent (their cgroups)."""
    from commonstack.testhosts.paths import owner_tag

    total = 0.0
    for name in [ONE, *EIGHT]:
        stat = Path("/sys/fs/cgroup/unified") / f"commonstack-{owner_tag()}" / name / "cpu.stat"
        if stat.exists():
            total += int(stat.read_text().split()[1]) / 1e6  # usage_usec
    return total


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
