"""Secrets: generated once, mode 0600, kept across runs, never shown."""

import os
import stat
import subprocess

import pytest

from commonstack.errors import SecretsError
from commonstack.inventories.secrets import ensure_secrets, generated_secrets, redacted
from commonstack.stacks.model import StackProfile


def profile(**services) -> StackProfile:
    base = {"group": "g", "domain": "example.org", "admin_email": "a@example.org",
            "hosts": [{"name": "vps", "address": "203.0.113.7"}]}
    return StackProfile.model_validate(base | services)


SMALL = profile(nextcloud={"enabled": True}, matrix={"enabled": True})


def test_generated_with_mode_0600_and_kept_across_runs(tmp_path):
    path = tmp_path / "secrets.yaml"
    first = ensure_secrets(path, SMALL)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first) == set(generated_secrets(SMALL))
    assert all(len(value) >= 40 for value in first.values())
    assert len(set(first.values())) == len(first), "every secret is different"
    assert dict(ensure_secrets(path, SMALL)) == dict(first)


def test_enabling_a_service_adds_its_secrets_and_keeps_the_others(tmp_path):
    path = tmp_path / "secrets.yaml"
    chat = profile(matrix={"enabled": True})
    before = dict(ensure_secrets(path, chat))
    after = dict(ensure_secrets(path, SMALL))
    assert "nextcloud_admin_password" in after and "nextcloud_admin_password" not in before
    assert {k: after[k] for k in before} == before


def test_repr_and_str_never_show_a_value(tmp_path):
    values = ensure_secrets(tmp_path / "secrets.yaml", SMALL)
    for text in (repr(values), str(values)):
        assert not any(value in text for value in values.values())


def test_a_file_readable_by_others_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "secrets.yaml"
    ensure_secrets(path, SMALL)
    path.chmod(0o644)
    with pytest.raises(SecretsError, match=r"mode 0644\); run `chmod 600 "):
        ensure_secrets(path, SMALL)


def test_missing_provided_secret_names_file_and_key(tmp_path):
    forum = profile(discourse={"enabled": True}, smtp={"host": "smtp.example.org", "username": "forum"})
    with pytest.raises(SecretsError, match=r"secrets.yaml: smtp_password: missing; add `smtp_password: \.\.\.`"):
        ensure_secrets(tmp_path / "secrets.yaml", forum)


def test_malformed_file_error_does_not_echo_its_content(tmp_path):
    path = tmp_path / "secrets.yaml"
    path.write_text("turn_shared_secret: [hunter2\n")
    path.chmod(0o600)
    with pytest.raises(SecretsError) as caught:
        ensure_secrets(path, SMALL)
    assert "hunter2" not in str(caught.value) and "malformed YAML" in str(caught.value)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB filesystem (tmpfs), so 'disk full' is the kernel's ENOSPC, not a stand-in."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_leaves_the_old_file_intact(tiny_disk):
    path = tiny_disk / "secrets.yaml"
    ensure_secrets(path, profile(matrix={"enabled": True}))
    before = path.read_text()
    filler = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(OSError, match="No space left"):
        while True:
            os.write(filler, b"x" * 1024)
    os.close(filler)
    with pytest.raises(SecretsError, match="No space left on device.*unchanged"):
        ensure_secrets(path, SMALL)
    assert path.read_text() == before
    assert not list(tiny_disk.glob(".*.tmp"))


def test_redacted_placeholders_cover_every_secret():
    assert set(redacted(SMALL)) == set(generated_secrets(SMALL))
    assert all(value == f"<secret:{name}>" for name, value in redacted(SMALL).items())
