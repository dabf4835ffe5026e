"""The Nextcloud deploy's decisions, without a host: the settings it declares, the install's
secrets, its packages and what the checks expect. (Its facts and operations have their tables:
tests/unit/test_facts.py, test_operations.py.)"""

from __future__ import annotations

import pytest

from commonstack.checks.context import host_expectations
from commonstack.deploys import nextcloud as deploy
from commonstack.plan import Release, plan_host
from commonstack.stacks.model import StackProfile
from commonstack.stacks.sizing import HostFacts
from commonstack.stacks.versions import versions
from tests.unit.pyinfra_tables import cases


def profile(**nextcloud) -> StackProfile:
    return StackProfile.model_validate(
        {"group": "t", "domain": "example.org", "admin_email": "admin@example.org",
         "hosts": [{"name": "server", "address": "203.0.113.7"}], "nextcloud": {"enabled": True, **nextcloud}}
    )  # fmt: skip


def plan(**nextcloud):
    p = profile(**nextcloud)
    secrets = {"postgres_nextcloud_password": "db-s3cret", "nextcloud_admin_password": "adm-s3cret"}
    return plan_host(p, p.hosts[0], secrets)


def test_settings_follow_the_profile():
    wanted = deploy.wanted_system_config(plan(default_phone_region="DE"))
    assert wanted["trusted_domains"] == ["cloud.example.org"]
    assert wanted["overwrite.cli.url"] == "https://cloud.example.org"
    assert wanted["memcache.local"] == "\\OC\\Memcache\\APCu"
    assert wanted["memcache.locking"] == "\\OC\\Memcache\\Redis"
    assert wanted["redis"] == {"host": "/run/redis/redis-server.sock", "port": 0}
    assert wanted["default_phone_region"] == "DE"
    assert isinstance(wanted["maintenance_window_start"], int)
    assert "default_phone_region" not in deploy.wanted_system_config(plan())
    # ...and they are the settings the operation's table is written for.
    table = next(case for case in cases("operations") if case.id == "nextcloud.nextcloud_system_config/after_the_install")
    assert table.load()["kwargs"]["wanted"] == wanted


def test_the_install_secrets_are_a_file_shell_can_read(tmp_path):
    tricky = "it's $HOME; `x`"
    env = tmp_path / "install.env"
    env.write_text(deploy.install_secrets("db-s3cret", tricky).getvalue())
    import subprocess

    script = f'. {env}; printf "%s|%s" "$NEXTCLOUD_DATABASE_PASSWORD" "$NEXTCLOUD_ADMIN_PASSWORD"'
    read = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert read.stdout == f"db-s3cret|{tricky}"


def test_the_install_keeps_secrets_off_command_lines():
    script = deploy.install_script("admin@example.org")
    assert "s3cret" not in script
    assert '--database-pass="$NEXTCLOUD_DATABASE_PASSWORD"' in script, "read from the root-only file"
    assert "OC_PASS=$NEXTCLOUD_ADMIN_PASSWORD" in script and "--password-from-env admin" in script
    assert "--data-dir=/var/lib/nextcloud/data" in script and "trap 'rm -f \"$env_file\"' EXIT" in script


@pytest.mark.parametrize("codename", ["bookworm", "trixie"])
def test_php_packages_follow_the_release(codename):
    debian = versions().debian[codename]
    p = profile()
    packages = plan_host(p, p.hosts[0], {}, Release(HostFacts(2048, 2, "amd64"), codename)).packages_of(("nextcloud",))
    for module in ("fpm", "cli", "gd", "mbstring", "xml", "zip", "curl", "intl", "bcmath", "gmp", "pgsql", "apcu",
                   "redis", "imagick", "bz2"):  # fmt: skip
        assert f"php{debian.php}-{module}" in packages
    assert debian.imagemagick_extra in packages and "gpgv" in packages
    assert not any("{" in package for package in packages)


def test_prerequisites_only_is_a_profile_key():
    assert profile().nextcloud.install == "full"
    assert profile(install="prerequisites").nextcloud.install == "prerequisites"


def test_checks_expect_what_the_deploy_installs():
    expected = host_expectations(plan())["nextcloud"]
    assert expected["admin_user"] == deploy.ADMIN_USER
    assert expected["version"] == versions().nextcloud.version
    assert expected["admin_password"] == "adm-s3cret"
    from commonstack.checks import nextcloud as checks

    assert checks.CODE_DIR == deploy.CODE_DIR and checks.DATA_DIR == deploy.DATA_DIR
    assert checks.REDIS_SOCKET == deploy.REDIS_SOCKET
