"""`commonstack drill`: proof that a group's backups restore, on a throwaway local test host.

The drill's group is a copy of the real one in a temporary folder, with the drilled host's
address replaced by the test host's and Caddy on its own CA (no certificate authority can reach
a local host); the secrets, and so the repository's password and the host's SSH key for it,
are the group's. The test host gets the backup layer, turns its timers off at once (it must
never write into the group's repository), then restores the snapshot like `commonstack restore`
(which deploys the rest; no pre-restore snapshot), and is removed. The group's real hosts are never
contacted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from commonstack import testhosts
from commonstack.backups.remote import HostShell
from commonstack.backups.restore import Say, restore_host
from commonstack.checks.group import HOSTS_FILE_ENV
from commonstack.errors import CommonstackError
from commonstack.inventories.groups import Group
from commonstack.plan import repository_host_keys
from commonstack.stacks.model import StackProfile
from commonstack.stacks.repository import parse_repository
from commonstack.stacks.sizing import minimum_memory_mb


@dataclass(frozen=True)
class Verdict:
    passed: bool
    line: str  # the one-line verdict


def drill_host_name(group: str, host: str) -> str:
    """A test host name of its own per drilled host (test host names are short)."""
    return "drill-" + hashlib.sha256(f"{group}/{host}".encode()).hexdigest()[:6]


def run_drill(
    group: Group,
    host: str,
    reference: str | None = None,
    suite: str = "bookworm",
    keep: bool = False,
    say: Say = print,
    progress: Say | None = None,
) -> Verdict:
    """Restore `host`'s snapshot onto a throwaway test host; never raises for a failed drill."""
    profile = group.load()
    repository = parse_repository(profile.backup.repository or "")
    if repository.kind == "local":
        return Verdict(False, f"drill of {host}: FAILED — the repository {repository.address} is a folder on {host} "
                              "itself: a throwaway host cannot reach it (an SFTP or rest-server repository can)")  # fmt: skip
    wanted = next(h for h in profile.hosts if h.name == host)
    memory = wanted.memory_mb or minimum_memory_mb(profile.services_on(wanted), "amd64")
    name = drill_host_name(profile.group, host)
    started = time.monotonic()
    try:
        say(f"drill of {host}: a throwaway Debian {suite} host ({memory} MB)")
        test = testhosts.up(name, suite=suite, memory=f"{memory}M", trust_controller_ca=True)
        with tempfile.TemporaryDirectory(prefix="commonstack-drill-") as folder:
            drilled = write_drill_group(group, profile, host, test, Path(folder), memory)
            with _hosts_file(profile, test.address, Path(folder)):
                _deploy(drilled, host, say, progress)
                report = restore_host(drilled, host, reference, say=say, progress=progress, safety_snapshot=False)
        minutes = (time.monotonic() - started) / 60
        counts = ", ".join(re.sub(r" \(\d+ at the backup\)", "", line) for line in report.counts)
        return Verdict(True, (
            f"drill of {host}: PASSED — snapshot {report.snapshot.short_id} ({report.snapshot.age()} old, "
            f"{report.snapshot.size / 1e6:.0f} MB) restored onto a throwaway Debian {suite} host in {minutes:.0f} min: "
            f"{', '.join(report.layers)}; {len(report.passed_checks)} health checks passed; counts as at the backup: {counts}"
        ))  # fmt: skip
    except CommonstackError as exc:
        return Verdict(False, f"drill of {host}: FAILED — {' '.join(str(exc).split())}")
    finally:
        if keep:
            say(f"the throwaway host stays: `commonstack hosts down {name}` removes it")
        else:
            testhosts.down(name)


def write_drill_group(group: Group, profile: StackProfile, host: str, test, root: Path, memory: int) -> Group:
    """The group, copied for the drill: the host at the test host's address, Caddy's own CA."""
    drilled = Group(group.name, root)
    drilled.folder.mkdir(mode=0o700, parents=True)
    document = profile.model_dump(mode="json", exclude_none=True)
    document.pop("preset", None)  # everything of the preset is in the dump already
    for entry in document["hosts"]:
        if entry["name"] == host:
            entry.update(address=test.address, user=test.user, port=test.port, ssh_key=str(test.key_path),
                         memory_mb=memory)  # fmt: skip
    document["tls"] = {"mode": "internal"}
    # Paths of the profile are relative to the group's folder: the copy points at the originals.
    if document["nextcloud"].get("archive"):
        document["nextcloud"]["archive"] = str((group.folder / document["nextcloud"]["archive"]).resolve())
    document["extra_ca_certificates"] = [str((group.folder / p).resolve()) for p in document["extra_ca_certificates"]]
    drilled.stack_file.write_text("# A restore drill's copy of the group (commonstack drill).\n"
                                  + yaml.safe_dump(document, sort_keys=False))  # fmt: skip
    shutil.copyfile(group.secrets_file, drilled.secrets_file)
    drilled.secrets_file.chmod(0o600)
    pinned = [testhosts.known_hosts_line(test) + "\n"]
    repository = parse_repository(profile.backup.repository or "")
    if repository.kind == "sftp":
        pinned += repository_host_keys(group, repository)
    drilled.known_hosts.write_text("".join(pinned))
    drilled.known_hosts.chmod(0o600)
    return drilled


def _deploy(group: Group, host: str, say: Say, progress: Say | None) -> None:
    """The backup layer only: the restore deploys the rest once the snapshot is fetched (a
    damaged repository fails the drill in a minute, not after every install)."""
    from commonstack.deploys.converge import GroupConverger  # pyinfra patches gevent: only when it runs

    say(f"drill of {host}: installing the backup tools on the throwaway host")
    converger = GroupConverger(group, (host,), on_progress=progress, only=frozenset({"backup"}),
                               generate_secrets=True)  # fmt: skip
    planned = converger.plan()
    applied = converger.apply(planned.pending) if not planned.failed else planned
    if applied.failed:
        raise CommonstackError(f"the deploy on the throwaway host failed: {applied.failed[0].error}")
    with HostShell(converger.targets) as shell:  # it must never write into the group's repository
        shell.run(host, "systemctl disable --now commonstack-backup.timer commonstack-backup-check.timer")


@contextmanager
def _hosts_file(profile: StackProfile, address: str, folder: Path):
    """The checks from this machine find the group's names at the test host (not the real one)."""
    names = sorted(set(profile.hostnames().values()) | ({profile.server_name} if profile.matrix.enabled else set()))
    hosts_file = folder / "hosts"
    hosts_file.write_text(f"{address} {' '.join(names)}\n")
    saved = os.environ.get(HOSTS_FILE_ENV)
    os.environ[HOSTS_FILE_ENV] = str(hosts_file)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(HOSTS_FILE_ENV, None)
        else:
            os.environ[HOSTS_FILE_ENV] = saved
