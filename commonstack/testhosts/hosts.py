"""Test host lifecycle: up, down, list, and cleanup of what crashes leave behind."""

from __future__ import annotations

import logging
from pathlib import Path

from . import cgroups, machine, names, network, paths, preflight, rootfs, state
from .errors import TestHostError
from .files import remove_tree
from .locks import locked
from .personalize import personalize, write_network
from .sshkeys import ssh_key_path, wait_for_sshd
from .state import RUNNING, STALE, STARTING, HostRecord, TestHost

log = logging.getLogger(__name__)

BOOT_TIMEOUT = 120.0  # seconds from nspawn to sshd; foreign architectures get several times more
EMULATION_FACTOR = 5


def up(
    name: str,
    suite: str = "bookworm",
    arch: str = "amd64",
    memory: str | int | None = None,
    trust_controller_ca: bool = False,
) -> TestHost:
    """Create and boot a host, or return it unchanged when it is already running.

    ``memory`` ("1G", "512M" or megabytes) limits the host's cgroup, a stand-in for a small
    VPS or a Pi; ``trust_controller_ca`` copies the controller's CA bundle in (TLS proxies).
    """
    names.validate(name)
    names.validate_image(suite, arch)
    memory_mb = cgroups.parse_memory(memory)
    preflight.require_support(arch)
    wanted = HostRecord(name=name, suite=suite, arch=arch, memory_mb=memory_mb, trust_controller_ca=trust_controller_ca)
    with locked(_lock(name)):
        record = state.load(name)
        if record is not None and _status(record, busy=False) == RUNNING:
            _require_same(record, wanted)
            host = record.to_host(RUNNING, ssh_key_path())
            log.info("test host %s is already running at %s", name, host.address)
            return host
        if _exists(name, record):
            log.info("test host %s: cleaning up what a crash left", name)
            _teardown(name, record)
        veth = Path("/sys/class/net") / names.veth(name)
        if veth.exists():
            raise TestHostError(f"interface {veth.name} exists already: the name {name!r} is taken on this machine")
        return _create(wanted)


def down(name: str) -> bool:
    """Remove the host (processes, network, cgroups, files); False when there was nothing to remove."""
    names.validate(name)
    preflight.require_support()
    with locked(_lock(name)):
        record = state.load(name)
        if not _exists(name, record):
            return False
        _teardown(name, record)
    log.info("test host %s removed", name)
    return True


def list_hosts() -> list[TestHost]:
    """Hosts of this state dir with their status: running, starting, or stale (crashed: see cleanup_stale)."""
    hosts = []
    for name in state.names():
        record = state.load(name)
        if record is not None:
            with locked(_lock(name), blocking=False) as free:
                hosts.append(record.to_host(_status(record, busy=not free), ssh_key_path()))
    return hosts


def cleanup_stale() -> list[str]:
    """Remove every host of this state dir that is not running or starting, orphaned cgroups and
    NAT tables (a crash before the state was saved) and failed starts' logs; returns the names."""
    preflight.require_support()
    cleaned = []
    for name in sorted(set(state.names()) | _leftover_names()):
        with locked(_lock(name), blocking=False) as free:
            if not free:  # an up or down is at work on it
                continue
            record = state.load(name)
            if record is not None and _status(record, busy=False) == RUNNING:
                continue
            log.info("test host %s: cleaning up stale leftovers", name)
            _teardown(name, record)
            cleaned.append(name)
    return cleaned


def _create(record: HostRecord) -> TestHost:
    name = record.name
    tarball = rootfs.build_rootfs(record.suite, record.arch)
    host_dir = paths.host_dir(name)
    root, console_log = host_dir / "rootfs", paths.console_log(name)
    host_dir.mkdir(parents=True)
    state.save(record)  # from here on, a crash leaves a stale host that cleanup_stale finds
    try:
        log.info("test host %s: copying the %s %s rootfs", name, record.suite, record.arch)
        rootfs.copy_rootfs(tarball, root)
        emulated = record.arch != preflight.native_arch()
        record.host_key = personalize(root, name, record.trust_controller_ca, emulated)
        procs = cgroups.create(name, record.memory_mb)
        log.info("test host %s: booting", name)
        with locked(paths.MACHINE_LOCK):  # until the subnet shows in the kernel (see network.allocate)
            subnet = network.allocate()
            write_network(root, subnet)
            record.subnet = subnet.index
            record.nspawn = machine.start(name, root, console_log, procs)
            state.save(record)
            network.wait_for_veth(name, record.nspawn, timeout=30)
            network.configure_host_side(name, subnet)
        timeout = BOOT_TIMEOUT * (EMULATION_FACTOR if emulated else 1)
        record.init = machine.wait_for_init(name, record.nspawn, console_log, timeout)
        state.save(record)
        network.configure_container_side(record.init, subnet)
        network.enable_forwarding()
        network.add_nat(name, subnet)
        nspawn = record.nspawn
        wait_for_sshd(name, subnet.address, lambda: machine.boot_failure(nspawn, console_log), timeout)
        record.status = RUNNING
        state.save(record)
    except BaseException:
        try:
            _teardown(name, record, keep_console_log=True)  # what the error message points to
        except Exception as error:  # keep the original error; report the cleanup problem beside it
            log.warning("test host %s: cleanup after a failed start failed too: %s", name, error)
        raise
    log.info("test host %s is up at %s", name, subnet.address)
    return record.to_host(RUNNING, ssh_key_path())


def _teardown(name: str, record: HostRecord | None, keep_console_log: bool = False) -> None:
    """Idempotent: processes first (their network namespace takes the veth with it), then the rest."""
    machine.stop(name, record.nspawn if record else None, record.init if record else None)
    machine.remove_runtime_files(name, paths.host_dir(name) / "rootfs")
    network.remove_nat(name)
    network.remove_veth(name)
    cgroups.remove(name)
    remove_tree(paths.host_dir(name))
    if not keep_console_log:
        paths.console_log(name).unlink(missing_ok=True)


def _status(record: HostRecord, busy: bool) -> str:
    if record.status == RUNNING and record.nspawn and record.init and record.nspawn.alive() and record.init.alive():
        return RUNNING
    return STARTING if record.status == STARTING and busy else STALE


def _require_same(record: HostRecord, wanted: HostRecord) -> None:
    fields = ("suite", "arch", "memory_mb", "trust_controller_ca")
    if any(getattr(record, f) != getattr(wanted, f) for f in fields):
        have = ", ".join(f"{f}={getattr(record, f)}" for f in fields)
        raise TestHostError(f"test host {record.name} is running with {have}: run down first to change it")


def _exists(name: str, record: HostRecord | None) -> bool:
    return record is not None or paths.host_dir(name).exists() or name in _leftover_names()


def _leftover_names() -> set[str]:
    """Hosts with a machine-wide trace (a crash before their state was saved) or a failed start's log."""
    logs = {path.name.removesuffix(paths.CONSOLE_LOG) for path in paths.logs_dir().glob(f"*{paths.CONSOLE_LOG}")}
    return cgroups.owned_names() | network.nat_owned_names() | logs


def _lock(name: str) -> Path:
    return paths.locks_dir() / f"{name}.lock"
