"""The cheap test before the simulated upgrade (stacks/updates.py `may_be_pending`), run with this
machine's sh, dpkg and awk against package lists and apt preferences made up in a folder: it
must let the simulation run whenever the security archive has a newer version of an installed
package, or when it cannot tell."""

from __future__ import annotations

import subprocess

import pytest

from commonstack.stacks.updates import may_be_pending

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
