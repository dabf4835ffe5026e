"""The cheap test before the simulated upgrade (stacks/updates.py `may_be_pending`), run with this
machine's sh, dpkg and awk against package lists and apt preferences made up in a folder: it
must let the simulation run whenever the security archive has a newer version of an installed
package, or when it cannot tell. Its awk orders versions as dpkg does: compared side by side."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess

import pytest

from commonstack.stacks.updates import DEBIAN_VERSION_ORDER, may_be_pending

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v dpkg-query"], capture_output=True).returncode != 0,
    reason="needs dpkg (a Debian machine)",
)

SECURITY = "deb.example.org_debian-security_dists_bookworm-security_"


def installed_dpkg() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", "dpkg"], capture_output=True, text=True, check=True).stdout


def lists(tmp_path, version: str, label: str = "Debian-Security", suffix: str = "") -> tuple[str, str]:
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / f"{SECURITY}InRelease").write_text(f"Origin: Debian\nLabel: {label}\nSuite: bookworm-security\n")
    packages = f"Package: apt\nVersion: 0.1\n\nPackage: dpkg\nArchitecture: amd64\nVersion: {version}\n\n"
    (folder / f"{SECURITY}main_binary-amd64_Packages{suffix}").write_text(packages)
    (folder / "deb.example.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("Package: dpkg\nVersion: 99:9\n")
    return str(folder), str(tmp_path / "preferences")


def pending(lists_folder: str, preferences: str) -> bool:
    return subprocess.run(["sh", "-c", may_be_pending(lists_folder, preferences)], capture_output=True).returncode == 0


@pytest.mark.parametrize(
    ("version", "expected"),
    [("99:0", True), (None, False), ("0.1", False)],
    ids=["newer in the security archive", "the installed version", "older"],
)
def test_the_simulation_runs_only_when_the_security_archive_has_a_newer_version(tmp_path, version, expected):
    assert pending(*lists(tmp_path, version or installed_dpkg())) is expected


def test_when_it_cannot_tell_the_simulation_runs(tmp_path):
    folder, preferences = lists(tmp_path, installed_dpkg())  # the main archive's newer dpkg: no matter
    assert not pending(folder, preferences)
    with open(preferences, "w") as pin:
        pin.write("Package: *\nPin: release l=Debian\nPin-Priority: 990\n")
    assert not pending(folder, preferences), "a pin below 1000 cannot make apt downgrade"
    with open(preferences, "w") as pin:
        pin.write("Package: *\nPin: release l=Debian-Security\npin-priority: 1001\n")
    assert pending(folder, preferences), "a pin of 1000 or more (apt reads field names in any case) can make apt downgrade"


def test_compressed_or_missing_security_lists_let_the_simulation_run(tmp_path):
    assert pending(*lists(tmp_path, installed_dpkg(), suffix=".lz4"))
    assert pending(str(tmp_path / "nowhere"), str(tmp_path / "preferences"))


def test_without_a_list_labelled_debian_security_the_simulation_runs(tmp_path):
    assert pending(*lists(tmp_path, installed_dpkg(), label="Debian"))


# Where a careless reading of deb-version(7) would differ: epochs, revisions (the last hyphen), "~"
# before anything (even the end), letters before other characters, numbers read as numbers.
EDGES = ["1.0", "1.0~rc1", "1.0~~", "1.0~", "1.0+b1", "1.0a", "1.0.", "1.0-1", "1.0-1~bpo12+1", "1.0-1+deb12u1",
         "1.0-10", "1.0-9", "1:0.1", "0:1.0", "2:0", "1.001", "1.1", "01.1", "2.30-1", "2.3-10", "1.0-a-b", "1.0-a-c",
         "10", "9", "1a", "1+", "1.2.3~alpha+git20240101-0ubuntu1", "7.88.1-10+deb12u14", "7.88.1-10+deb12u8"]  # fmt: skip


def dpkg_order(a: str, b: str) -> str:
    for op in ("lt", "eq"):
        if subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0:
            return op
    return "gt"


@pytest.mark.parametrize("awk", [a for a in ("mawk", "gawk", "original-awk") if shutil.which(a)] or ["awk"])
def test_versions_are_ordered_as_dpkg_orders_them(awk):
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}\\n"], capture_output=True, text=True, check=True)
    versions = sorted(set(installed.stdout.split()))
    rng = random.Random(1)
    pairs = list(itertools.permutations(EDGES, 2)) + [tuple(rng.sample(versions, 2)) for _ in range(100)]
    program = DEBIAN_VERSION_ORDER + 'BEGIN { deb_init() } { c = deb_compare($1, $2); print (c < 0 ? "lt" : c > 0 ? "gt" : "eq") }'
    ours = subprocess.run([awk, program], input="".join(f"{a} {b}\n" for a, b in pairs), capture_output=True, text=True, check=True)
    assert [f"{a} {op} {b}" for (a, b), op in zip(pairs, ours.stdout.split())] == [f"{a} {dpkg_order(a, b)} {b}" for a, b in pairs]
