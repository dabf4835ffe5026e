"""What an emulated test host gets: the controller's own nft, complete enough to run on its own."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from commonstack.testhosts.emulation import NATIVE_NFT_DIR, NFT, SERVICE_DROP_IN, prepare_emulated


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("ldd") is None, reason="no nft here (./dev installs nftables)")
def test_the_native_nft_runs_from_its_copy_alone(tmp_path):
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/diversions").write_text("")
    prepare_emulated(tmp_path)
    folder = tmp_path / NATIVE_NFT_DIR
    # In a chroot (as root) only the copied loader and libraries exist, as in an arm64 host.
    inside = f"/{NATIVE_NFT_DIR}"
    command = [f"{inside}/loader", "--library-path", inside, f"{inside}/nft", "--version"]
    if os.geteuid() == 0:
        command = [shutil.which("chroot"), str(tmp_path), *command]
    else:
        command = [c.replace(inside, str(folder)) for c in command]
    result = subprocess.run(command, capture_output=True, text=True, env={})
    assert result.returncode == 0 and result.stdout.startswith("nftables v"), result.stderr
    wrapper = (tmp_path / NFT.lstrip("/")).read_text()
    assert f"exec /{NATIVE_NFT_DIR}/loader" in wrapper and "not for real hosts" in wrapper
    assert (tmp_path / "var/lib/dpkg/diversions").read_text() == f"{NFT}\n{NFT}.distrib\n:\n"
    drop_in = tmp_path / "etc/systemd/system/service.d/50-commonstack-emulation.conf"
    assert drop_in.read_text() == SERVICE_DROP_IN and "ImportCredential=" in SERVICE_DROP_IN
