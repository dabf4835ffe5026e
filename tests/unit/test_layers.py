"""The layer registry: what each preset puts on each host, and that every list the kit keeps of
layers (templates, deploys, checks, ports, secrets, databases) is the registry's."""

from __future__ import annotations

import inspect

import pytest

from commonstack.deploys.stack import deploy_function
from commonstack.plan import Release, plan_host
from commonstack.rendering import TEMPLATES_DIR
from commonstack.stacks.layers import (
    LAYER_NAMES,
    LAYERS,
    databases_on,
    firewall_ports,
    generated_secrets,
    layer,
    layers_on,
)
from commonstack.stacks.loader import deep_merge, load_preset
from commonstack.stacks.model import StackProfile
from commonstack.stacks.sizing import HostFacts


def profile_of(preset: str, **overrides) -> StackProfile:
    hosts = [{"name": "home", "address": "192.168.1.20"}, {"name": "vps", "address": "203.0.113.7"}]
    base = {"group": "g", "domain": "example.org", "admin_email": "a@example.org", "hosts": hosts,
            "smtp": {"host": "smtp.example.org", "username": "forum"}}  # fmt: skip
    return StackProfile.model_validate(deep_merge(deep_merge(load_preset(preset).profile, base), overrides))


def on(profile: StackProfile, host_name: str) -> tuple[str, ...]:
    return layers_on(profile, next(h for h in profile.hosts if h.name == host_name))


@pytest.mark.parametrize(
    ("preset", "host_name", "expected"),
    [
        ("small-group", "home", ("base", "postgres", "redis", "caddy", "synapse", "coturn", "nextcloud")),
        ("small-group", "vps", ("base",)),
        ("chat", "home", ("base", "postgres", "caddy", "synapse", "coturn")),
        ("forum", "home", ("base", "caddy", "docker", "discourse")),
        ("full", "home", ("base", "postgres", "redis", "caddy", "synapse", "coturn", "nextcloud", "docker",
                          "discourse")),
        ("split", "home", ("base", "postgres", "redis", "caddy", "nextcloud")),
        ("split", "vps", ("base", "postgres", "caddy", "synapse", "coturn", "docker", "discourse")),
    ],
)  # fmt: skip
def test_each_preset_puts_its_layers_and_what_they_require_on_each_host(preset, host_name, expected):
    assert on(profile_of(preset), host_name) == expected


def test_turning_a_service_off_takes_its_layer_and_what_only_it_needed():
    chat = profile_of("chat")
    assert "coturn" not in on(profile_of("chat", matrix={"turn": {"enabled": False}}), "home")
    alone = profile_of("small-group", matrix={"enabled": False})
    assert on(alone, "home") == ("base", "postgres", "redis", "caddy", "nextcloud")
    assert "redis" not in on(chat, "home"), "Redis is Nextcloud's: chat has no use for it"


def test_backups_are_a_layer_on_every_host_when_enabled():
    split = profile_of("split", backup={"enabled": True, "repository": "sftp:u@backup.example.net:/srv/restic"})
    assert on(split, "home")[-1] == on(split, "vps")[-1] == "backup"


def test_firewall_ports_come_from_the_layers_on_the_host():
    chat = profile_of("chat", matrix={"turn": {"min_port": 50000, "max_port": 50010}})
    home = chat.hosts[0]
    assert [(p.proto, p.port) for p in firewall_ports(chat, home)] == [
        ("tcp", "22"), ("tcp", "80"), ("tcp", "443"), ("udp", "443"),
        ("tcp", "3478"), ("udp", "3478"), ("tcp", "5349"), ("udp", "5349"), ("udp", "50000-50010"),
    ]  # fmt: skip
    assert [(p.proto, p.port) for p in firewall_ports(chat, chat.hosts[1])] == [("tcp", "22")]


def test_databases_and_generated_secrets_follow_the_layers():
    split = profile_of("split")
    assert [(d.name, d.collation) for d in databases_on(split, split.hosts[0])] == [("nextcloud", None)]
    assert [(d.name, d.collation) for d in databases_on(split, split.hosts[1])] == [("synapse", "C")]
    assert generated_secrets(profile_of("chat", matrix={"turn": {"enabled": False}})) == [
        "postgres_synapse_password", "synapse_registration_shared_secret", "synapse_macaroon_secret_key",
        "synapse_form_secret", "matrix_admin_password",
    ]  # fmt: skip
    assert generated_secrets(split) == [
        "postgres_synapse_password", "synapse_registration_shared_secret", "synapse_macaroon_secret_key",
        "synapse_form_secret", "matrix_admin_password", "turn_shared_secret", "postgres_nextcloud_password",
        "nextcloud_admin_password",
    ]  # fmt: skip


def test_a_layer_comes_after_every_layer_it_requires():
    for item in LAYERS:
        for required in item.requires:
            assert LAYER_NAMES.index(required) < LAYER_NAMES.index(item.name), (item.name, required)


def test_template_folders_are_the_layers_templates():
    folders = {path.name for path in TEMPLATES_DIR.iterdir() if path.is_dir()}
    assert folders <= set(LAYER_NAMES), folders - set(LAYER_NAMES)


def test_every_reference_names_a_function_of_the_deploys():
    for item in LAYERS:
        for reference in (item.deploy, item.preflight, item.first_start, item.remove):
            if reference:
                assert callable(deploy_function(reference)), reference
    assert all(item.deploy for item in LAYERS), "every layer is deployed"


def test_a_layer_with_a_first_start_is_deployed_with_what_it_returned():
    with_first_start = [item for item in LAYERS if item.first_start]
    assert with_first_start  # PostgreSQL's settings
    for item in with_first_start:
        assert "first_start" in inspect.signature(deploy_function(item.deploy)).parameters, item.deploy


@pytest.mark.parametrize("codename", ["bookworm", "trixie"])
def test_packages_and_units_are_spelled_for_the_hosts_release(codename):
    profile = profile_of("full")
    secrets = {name: "s3cret" for name in [*generated_secrets(profile), "smtp_password"]}
    plan = plan_host(profile, profile.hosts[0], secrets, Release(HostFacts(4096, 2, "amd64"), codename))
    packages = plan.packages_of(plan.layers)
    assert not [p for p in packages if "{" in p]
    assert f"postgresql-{plan.postgresql_version}" in packages and f"php{plan.php_version}-fpm" in packages
    assert plan.units_of("nextcloud") == [f"php{plan.php_version}-fpm", "nextcloud-cron.timer"]
    assert layer("coturn").units == ("coturn", "coturn-certificate.timer")
