"""Health checks of the machine itself, whatever it runs: disk, memory, OOM kills, failed
units, automatic updates, a pending reboot, the clock. (The swap file is base.py's.)"""

from __future__ import annotations

import pytest

# Below 15% free, PostgreSQL, Nextcloud uploads and logs can fill the rest within days.
MIN_FREE_DISK = 0.15
# Below 10% available, the kernel starts killing processes (or swapping hard) at the next peak.
MIN_AVAILABLE_MEMORY = 0.10

# Filesystems that hold data. Not: squashfs (snaps: always full), overlay (Docker's layers: the
# disk under them is checked), fuse (network mounts report sizes of their own), proc, sysfs...
DISK_FILESYSTEMS = {
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "jfs", "reiserfs", "nilfs2", "bcachefs",
    "vfat", "exfat", "ntfs", "ntfs3", "fuseblk",
}  # fmt: skip
MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}
# Memory filesystems there are the system's own (sockets, locks, per-user runtime dirs), not data.
RUNTIME_DIRS = ("/dev", "/proc", "/run", "/sys")

# Counters of the host's own memory, wherever the host is: a container sees its cgroup's (v2 or
# v1); a machine of its own sees the whole kernel's (/proc/vmstat), with no cgroup files at its root.
MEMORY_FILES = (
    "/proc/meminfo",
    "/proc/vmstat",
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory.current",
    "/sys/fs/cgroup/memory.stat",
    "/sys/fs/cgroup/memory.events",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    "/sys/fs/cgroup/memory/memory.stat",
    "/sys/fs/cgroup/memory/memory.oom_control",
)


@pytest.fixture(scope="module")
def memory(host) -> dict[str, dict[str, int]]:
    """{file: {key: value}} of MEMORY_FILES, read in one command (files that do not exist are left out)."""
    output = host.run("grep -sH '' --" + " %s" * len(MEMORY_FILES), *MEMORY_FILES).stdout
    return parse_memory_files(output)


def test_every_filesystem_has_free_space(host):
    output = host.run("df -B1 --output=source,fstype,size,avail,target").stdout
    full = [m for m in checked_mounts(output) if m["avail"] < MIN_FREE_DISK * m["size"]]
    assert not full, (
        "; ".join(f"{m['target']}: {m['avail'] / m['size']:.0%} free ({_mb(m['avail'])} of {_mb(m['size'])})"
                  for m in full)
        + f", under {MIN_FREE_DISK:.0%}: see what grows with `sudo du -xh --max-depth=2 {full[0]['target']} "
        "| sort -h | tail`; old logs: `sudo journalctl --vacuum-size=200M`"
    )  # fmt: skip


def test_memory_is_available(memory):
    total, available = available_memory(memory)
    assert available >= MIN_AVAILABLE_MEMORY * total, (
        f"only {_mb(available)} of {_mb(total)} memory available: `ps aux --sort=-rss | head` shows what "
        "uses it; the host may be too small for its services (`commonstack presets`) or its tuning too large"
    )


def test_no_process_was_killed_for_lack_of_memory(memory, in_container):
    killed = oom_kills(memory, in_container)
    assert killed == 0, (
        f"{killed} process(es) killed for lack of memory since boot (counted until the next reboot): "
        "`journalctl -k -g 'Killed process'` says which; the host needs more memory or swap, or smaller "
        "tuning (`commonstack plan`)"
    )


def test_no_systemd_unit_has_failed(host):
    listing = host.check_output("systemctl list-units --state=failed --plain --no-legend --no-pager")
    units = [line.split()[0] for line in listing.splitlines() if line.strip()]
    assert not units, (
        f"failed: {', '.join(units)}: `systemctl status {units[0]}` and `journalctl -b -u {units[0]}` say why; "
        "once fixed, `sudo systemctl reset-failed`"
    )


def test_security_updates_run_automatically(host):
    states = host.run("systemctl is-active apt-daily-upgrade.timer unattended-upgrades.service").stdout.split()
    inactive = [unit for unit, state in zip(("apt-daily-upgrade.timer", "unattended-upgrades"), states)
                if state != "active"]  # fmt: skip
    assert not inactive, (
        f"{', '.join(inactive)} not active: security updates are not installed automatically; "
        f"`sudo systemctl enable --now {' '.join(inactive)}`"
    )


def test_no_reboot_is_pending(host):
    flag = host.file("/run/reboot-required")
    if flag.exists:
        packages = host.run("cat /run/reboot-required.pkgs").stdout.split()
        because = f" (updated: {', '.join(sorted(set(packages)))})" if packages else ""
        pytest.fail(
            f"a reboot is pending{because}: updates take effect only after it; "
            "reboot when the group can spare a few minutes: `sudo systemctl reboot`"
        )


def test_clock_is_synchronised(host, in_container):
    if in_container:
        pytest.skip("a container keeps the machine's clock (timesyncd does not run in one)")
    synchronised = host.check_output("timedatectl show --property=NTPSynchronized --value")
    assert synchronised == "yes", (
        "the clock is not synchronised (certificates, TOTP logins and Matrix federation need it): "
        "`timedatectl timesync-status`; is outgoing UDP port 123 blocked?"
    )


# --- reading what the host says ---------------------------------------------------------------


def checked_mounts(df_output: str) -> list[dict]:
    """The mounts the disk check covers, from `df -B1 --output=source,fstype,size,avail,target`.

    Every filesystem on a disk, and memory filesystems (tmpfs) outside the system's runtime
    dirs: one at /tmp or /srv fills up like a disk and breaks the service writing there. A
    filesystem mounted at several places (bind mounts) counts once, at its first place.
    """
    mounts, seen = [], set()
    for line in df_output.splitlines()[1:]:
        fields = line.split(maxsplit=4)
        if len(fields) < 5 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        source, fstype, size, avail, target = fields[0], fields[1], int(fields[2]), int(fields[3]), fields[4]
        memory_fs = fstype in MEMORY_FILESYSTEMS
        if size == 0 or not (fstype in DISK_FILESYSTEMS or memory_fs):
            continue
        if memory_fs and any(target == d or target.startswith(d + "/") for d in RUNTIME_DIRS):
            continue
        if not memory_fs:
            if source in seen:
                continue
            seen.add(source)
        mounts.append({"source": source, "fstype": fstype, "size": size, "avail": avail, "target": target})
    return mounts


def parse_memory_files(grep_output: str) -> dict[str, dict[str, int]]:
    """`grep -H '' FILES` output -> {file: {key: bytes or count}}; a file of one bare value has key ''.

    Handles "MemTotal:  2048 kB" (meminfo), "oom_kill 3" (vmstat, memory.stat, memory.events)
    and "2147483648" (cgroup limits); cgroup v2's "max" (no limit) is left out.
    """
    files: dict[str, dict[str, int]] = {}
    for line in grep_output.splitlines():
        path, _, text = line.partition(":")
        words = text.replace(":", " ").split()
        key, value = ("", words[0]) if len(words) == 1 else (words[0], words[1]) if words else ("", "")
        if value.isdigit():
            files.setdefault(path, {})[key] = int(value) * (1024 if words[-1] == "kB" else 1)
    return files


def available_memory(files: dict[str, dict[str, int]]) -> tuple[int, int]:
    """(total, available) bytes: the kernel's MemTotal/MemAvailable, within the cgroup's limit if any.

    In a container /proc/meminfo shows the whole machine's memory; its cgroup's limit, usage and
    reclaimable page cache (inactive files) say what is really left for it.
    """
    meminfo = files["/proc/meminfo"]
    total, available = meminfo["MemTotal"], meminfo["MemAvailable"]
    for limit_file, usage_file, stat_file, inactive_key in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
         "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"),
    ):  # fmt: skip
        limit = files.get(limit_file, {}).get("")
        usage = files.get(usage_file, {}).get("")
        if limit is None or usage is None or limit >= total:
            continue
        reclaimable = files.get(stat_file, {}).get(inactive_key, 0)
        return limit, min(available, max(limit - usage + reclaimable, 0))
    return total, available


def oom_kills(files: dict[str, dict[str, int]], in_container: bool) -> int:
    """Processes the kernel killed for lack of memory since boot (of the container, in one)."""
    if in_container:
        for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
            if "oom_kill" in files.get(path, {}):
                return files[path]["oom_kill"]
    return files.get("/proc/vmstat", {}).get("oom_kill", 0)


def _mb(size: int) -> str:
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.1f} MB"
