"""What `commonstack try` writes: a group that says what it deploys, services it left out disabled
with their reason, and test hosts named after the trial."""

from __future__ import annotations

from pathlib import Path

import yaml

from commonstack.stacks.loader import load_profile
from commonstack.testhosts import TestHost
from commonstack.trial import services_left_out, trial_hosts, write_try_group

WHY = ("the profile says offline: true, so https://download.nextcloud.com/server/releases/nextcloud-32.0.2.tar.bz2 "
       "is not fetched (set nextcloud.archive to a local copy)")


def running_host(name: str, address: str) -> TestHost:
    return TestHost(name=name, address=address, key_path=Path("/var/lib/commonstack/testhosts/ssh/id_ed25519"),
                    suite="bookworm", arch="amd64", memory_mb=2048, host_key="ssh-ed25519 AAAAC3Nza root@x")


def test_hosts_are_named_after_the_trial():
    assert [t.testhost for t in trial_hosts("chat", name="trychat")] == ["trychat"]
    assert [t.testhost for t in trial_hosts("split", name="trysplit")] == ["trysplit-home", "trysplit-vps"]


def test_a_left_out_service_is_written_disabled_with_its_reason(tmp_path):
    (trial,) = trial_hosts("small-group")
    running = [(trial, running_host("try", "10.231.7.2"))]
    group = write_try_group(tmp_path, "small-group", running, overrides={"offline": True},
                            left_out={"nextcloud": WHY})
    text = group.stack_file.read_text()
    comment = text[text.index("# nextcloud is left out"):text.index("\nnextcloud:")]
    assert " ".join(line.removeprefix("# ") for line in comment.splitlines()) == f"nextcloud is left out: {WHY}"
    assert all(len(line) <= 100 for line in text.splitlines())
    profile = load_profile(group.stack_file)
    assert profile.enabled_services() == ["matrix"] and profile.offline
    assert yaml.safe_load(text)["nextcloud"] == {"enabled": False}


def test_left_out_keeps_the_overrides_of_that_service(tmp_path):
    (trial,) = trial_hosts("small-group")
    group = write_try_group(tmp_path, "small-group", [(trial, running_host("try", "10.231.7.2"))],
                            overrides={"nextcloud": {"default_phone_region": "DE"}}, left_out={"nextcloud": WHY})
    assert yaml.safe_load(group.stack_file.read_text())["nextcloud"] == {"default_phone_region": "DE", "enabled": False}


def test_services_left_out_are_the_services_among_the_unavailable_layers(tmp_path):
    (trial,) = trial_hosts("full")
    group = write_try_group(tmp_path, "full", [(trial, running_host("try", "10.231.7.2"))])
    unavailable = {"server": {"nextcloud": WHY, "discourse": "github.com does not answer"}}
    assert services_left_out(unavailable, group.load()) == {"nextcloud": WHY, "discourse": "github.com does not answer"}
    assert services_left_out({}, group.load()) == {}
