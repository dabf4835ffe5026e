"""Discourse offline: app.yml per host size against committed fixtures, the preflight's
refusals, the pinned source and its overrides, the rebuild condition. (Its facts and
operations have their tables: tests/unit/test_facts.py, test_operations.py.)

fixtures/discourse/stack.yaml is a forum group; app-{1,2,4,8}gb.yml are the app.yml files its
host must receive at those sizes (reviewed against discourse-setup's scale_ram_and_cpu). After an
intended template change: COMMONSTACK_REGENERATE_FIXTURES=1 pytest tests/unit/test_discourse.py,
then review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from commonstack.deploys import discourse as forum
from commonstack.deploys.discourse import (
    APP_YML,
    LAUNCHER_KEY,
    UNREACHABLE,
    DiscoursePreflightError,
    ForumHost,
    Source,
    build_stamp,
    discourse_docker_source,
    preflight,
    rebuild_reason,
)
from commonstack.deploys.docker import engine_problem, keeps_own_engine
from commonstack.deploys.preflight import SourceUnavailable
from commonstack.errors import ProfileError
from commonstack.plan import Release, plan_host
from commonstack.stacks.loader import load_profile
from commonstack.stacks.model import DiscourseSettings, SmtpSettings
from commonstack.stacks.sizing import HostFacts, compute_sizing
from commonstack.stacks.version_numbers import numeric
from commonstack.stacks.versions import versions

FIXTURES = Path(__file__).parent / "fixtures" / "discourse"
SMTP_PASSWORD = "fixture-smtp-password"
# (nominal GB, CPUs): a 1 GB VPS has 1 vCPU, 2 GB 1, 4 GB 2, 8 GB 4. MemTotal is 94% of nominal.
HOSTS = {1: 1, 2: 1, 4: 2, 8: 4}
SMTP = SmtpSettings(host="smtp.example.net", username="forum@example.org")
SOURCE = Source("https://github.com/discourse/discourse_docker.git", "8e01602ac395e3f27df6042ad2868c30ef0f0859")


def memtotal(gb: int) -> int:
    return gb * 1024 * 94 // 100


def rendered_app_yml(gb: int, arch: str = "amd64") -> str:
    profile = load_profile(FIXTURES / "stack.yaml")
    facts = HostFacts(memory_mb=memtotal(gb), cpus=HOSTS[gb], arch=arch)
    plan = plan_host(profile, profile.hosts[0], {"smtp_password": SMTP_PASSWORD}, Release(facts, "bookworm"))
    return next(f.content for f in plan.files if f.path == APP_YML)


# --- app.yml ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gb", sorted(HOSTS))
def test_app_yml_is_rendered_exactly_as_the_fixture(gb):
    expected = FIXTURES / f"app-{gb}gb.yml"
    content = rendered_app_yml(gb)
    if os.environ.get("COMMONSTACK_REGENERATE_FIXTURES"):
        expected.write_text(content)
    assert content == expected.read_text(), f"app.yml for a {gb} GB host differs from {expected.name}"


@pytest.mark.parametrize(
    ("gb", "workers", "shared_buffers"),
    [
        (1, 1, "128MB"),  # upstream says 2 workers; only 1 fits beside the database in 962 MB
        (2, 4, "256MB"),  # discourse-setup: 2 x GB workers up to 2 GB, 256 MB at 2 GB
        (4, 4, "1024MB"),  # above 2 GB: 2 x cores workers, 256 MB x GB
        (8, 8, "2048MB"),  # workers capped at 8
    ],
)
def test_app_yml_follows_discourse_setups_sizing(gb, workers, shared_buffers):
    config = yaml.safe_load((FIXTURES / f"app-{gb}gb.yml").read_text())
    assert config["env"]["UNICORN_WORKERS"] == workers
    assert config["params"]["db_shared_buffers"] == shared_buffers


def test_app_yml_is_socketed_behind_caddy_and_sends_mail():
    config = yaml.safe_load(rendered_app_yml(2))
    assert config["templates"][-1] == "templates/web.socketed.template.yml"
    assert "expose" not in config, "no container port may be published"
    env = config["env"]
    assert env["DISCOURSE_HOSTNAME"] == "forum.tenants.example.org"
    assert env["DISCOURSE_DEVELOPER_EMAILS"] == "board@tenants.example.org"
    assert env["DISCOURSE_FORCE_HTTPS"] is True
    assert (env["DISCOURSE_SMTP_ADDRESS"], env["DISCOURSE_SMTP_PORT"]) == ("smtp.example.net", 587)
    assert env["DISCOURSE_SMTP_PASSWORD"] == SMTP_PASSWORD and env["DISCOURSE_SMTP_ENABLE_START_TLS"] is True


def test_app_yml_does_not_depend_on_the_architecture():
    assert rendered_app_yml(4, "arm64") == rendered_app_yml(4, "amd64")


def test_caddy_proxies_the_forum_to_the_socket_with_the_client_address():
    profile = load_profile(FIXTURES / "stack.yaml")
    plan = plan_host(profile, profile.hosts[0], {"smtp_password": SMTP_PASSWORD})
    caddyfile = next(f.content for f in plan.files if f.path == "/etc/caddy/Caddyfile")
    site = caddyfile[caddyfile.index("forum.tenants.example.org {") :]
    assert "reverse_proxy unix//var/discourse/shared/standalone/nginx.http.sock {" in site
    assert "header_up X-Real-IP {remote_host}" in site  # nginx's default real_ip_header
    assert "import security_headers" in site


# --- swap from sizing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("services", "gb", "swap_mb"),
    [
        ({"discourse"}, 1, 2048),
        ({"discourse"}, 2, 2048),
        ({"discourse"}, 4, 2048),
        ({"discourse"}, 8, 0),
        ({"discourse", "nextcloud", "matrix", "turn"}, 4, 2048),
        ({"discourse", "nextcloud", "matrix", "turn"}, 8, 0),
    ],
)
def test_sizing_gives_discourse_hosts_of_up_to_4_gb_two_gb_of_swap(services, gb, swap_mb):
    sizing = compute_sizing(HostFacts(memory_mb=memtotal(gb), cpus=HOSTS[gb], arch="amd64"), frozenset(services))
    assert sizing.swap_mb == swap_mb


# --- preflight -------------------------------------------------------------------------------


def forum_host(**changes) -> ForumHost:
    values = dict(memory_mb=memtotal(2), arch="amd64", swap_mb=2048, free_disk_mb=40 * 1024, source_reachable=True)
    values.update(changes)
    return ForumHost(**values)


def test_a_host_that_fits_passes():
    assert preflight(forum_host(), SMTP, SMTP_PASSWORD, SOURCE) == forum.Verdict([], [])


def test_too_little_ram_is_refused():
    verdict = preflight(forum_host(memory_mb=700), SMTP, SMTP_PASSWORD, SOURCE)
    assert verdict.problems == ["700 MB of RAM: Discourse needs 1 GB (and 2 GB of swap)"]
    # A 1 GB VPS reports ~960 MB: accepted (sizing's 10% slack).
    assert not preflight(forum_host(memory_mb=memtotal(1)), SMTP, SMTP_PASSWORD, SOURCE).problems


def test_no_smtp_is_refused_naming_the_profile_keys():
    [problem] = preflight(forum_host(), None, None, SOURCE).problems
    assert problem == "no mail relay: set smtp.host (and smtp.username) in stack.yaml, smtp_password in secrets.yaml"


def test_a_login_without_its_password_is_refused():
    [problem] = preflight(forum_host(), SMTP, None, SOURCE).problems
    assert problem == "smtp.username is set but secrets.yaml has no smtp_password"


@pytest.mark.parametrize("password", ["back\\slash", "two\nlines", " padded "])
def test_a_password_the_launcher_would_mangle_is_refused_without_showing_it(password):
    [problem] = preflight(forum_host(), SMTP, password, SOURCE).problems
    assert "choose another password" in problem and password.strip() not in problem


@pytest.mark.parametrize("arch", ["armhf", "armel", "armv7l"])
def test_32_bit_arm_is_refused(arch):
    [problem] = preflight(forum_host(arch=arch), SMTP, SMTP_PASSWORD, SOURCE).problems
    assert problem == f"32-bit ARM ({arch}): Discourse runs on amd64 and arm64 only, so install a 64-bit OS"


def test_arm64_is_a_warning_not_a_refusal():
    verdict = preflight(forum_host(arch="arm64"), SMTP, SMTP_PASSWORD, SOURCE)
    assert (verdict.problems, verdict.warnings) == ([], ["arm64 is experimental upstream"])


def test_an_unknown_architecture_is_refused():
    assert "architecture riscv64" in preflight(forum_host(arch="riscv64"), SMTP, SMTP_PASSWORD, SOURCE).problems[0]


def test_swap_below_two_gb_is_refused_up_to_2_gb_and_warned_about_up_to_4_gb():
    [problem] = preflight(forum_host(memory_mb=memtotal(2), swap_mb=0), SMTP, SMTP_PASSWORD, SOURCE).problems
    assert problem == f"0 MB of swap at {memtotal(2)} MB of RAM: Discourse needs 2 GB (drop the host's swap_mb sizing override)"
    verdict = preflight(forum_host(memory_mb=memtotal(4), swap_mb=0), SMTP, SMTP_PASSWORD, SOURCE)
    assert not verdict.problems and verdict.warnings == ["only 0 MB of swap: a rebuild may run out of memory"]
    assert preflight(forum_host(memory_mb=memtotal(8), swap_mb=0), SMTP, SMTP_PASSWORD, SOURCE) == forum.Verdict()


def test_free_disk_matters_only_before_a_build():
    first = forum_host(free_disk_mb=8 * 1024, first_build=True, will_build=True)
    assert preflight(first, SMTP, SMTP_PASSWORD, SOURCE).problems == [
        "8 GB free on /var, the first build needs 10 GB (`./launcher cleanup` frees old images)"
    ]
    rebuild = forum_host(free_disk_mb=8 * 1024, first_build=False, will_build=True)
    assert not preflight(rebuild, SMTP, SMTP_PASSWORD, SOURCE).problems
    tight = forum_host(free_disk_mb=4 * 1024, first_build=False, will_build=True)
    assert "4 GB free on /var, a rebuild needs 5 GB" in preflight(tight, SMTP, SMTP_PASSWORD, SOURCE).problems[0]
    idle = forum_host(free_disk_mb=1024, first_build=False, will_build=False)
    assert not preflight(idle, SMTP, SMTP_PASSWORD, SOURCE).problems


def test_an_old_docker_engine_is_refused_a_recent_one_kept():
    old = forum_host(docker={"version": "19.03.13", "package": "docker-ce"})
    [problem] = preflight(old, SMTP, SMTP_PASSWORD, SOURCE).problems
    assert problem.startswith("Docker 19.03.13 (from the docker-ce package) is older than 20.10")
    assert engine_problem({"version": "20.10.24", "package": "docker.io"}) is None
    assert keeps_own_engine({"version": "27.3.1", "package": "docker-ce"})
    assert not keeps_own_engine({"version": "20.10.24", "package": "docker.io"}) and not keeps_own_engine(None)
    assert numeric("17.03.1") < numeric("20.10") <= numeric("20.10.24") < numeric("26.1.5")


def test_an_unreachable_repository_is_refused_and_says_how_to_fix_it():
    [problem] = preflight(forum_host(source_reachable=False), SMTP, SMTP_PASSWORD, SOURCE).problems
    assert problem.startswith(f"{UNREACHABLE} https://github.com/discourse/discourse_docker.git")
    assert "github.com and Docker Hub" in problem and LAUNCHER_KEY in problem
    mirror = Source("file:///srv/mirror.git", SOURCE.commit, overridden=True)
    [problem] = preflight(forum_host(source_reachable=False), SMTP, SMTP_PASSWORD, mirror).problems
    assert problem == f"{UNREACHABLE} file:///srv/mirror.git ({LAUNCHER_KEY} in stack.yaml)"
    # Not probed (nothing to fetch or build): no problem.
    assert not preflight(forum_host(source_reachable=None), SMTP, SMTP_PASSWORD, SOURCE).problems


def test_refusals_are_one_line_and_only_an_unreachable_source_lets_try_skip_the_forum():
    unreachable = forum.refusal(preflight(forum_host(source_reachable=False), SMTP, SMTP_PASSWORD, SOURCE))
    assert isinstance(unreachable, SourceUnavailable) and unreachable.layer == "discourse"
    both = forum.refusal(preflight(forum_host(source_reachable=False, arch="armhf"), None, None, SOURCE))
    assert isinstance(both, DiscoursePreflightError) and "\n" not in str(both)
    assert str(both).startswith("discourse: 32-bit ARM (armhf)") and str(both).count("; ") == 2
    # The runner shows a host's error in 300 characters, after its own ~60: one problem fits whole.
    assert all(len(f"discourse: {problem}") < 240 for problem in preflight(
        forum_host(memory_mb=700, swap_mb=0, arch="armhf", free_disk_mb=1, source_reachable=False,
                   docker={"version": "1.13.1", "package": None}), None, None, SOURCE
    ).problems)
    assert forum.refusal(preflight(forum_host(), SMTP, SMTP_PASSWORD, SOURCE)) is None


# --- source and rebuild condition -------------------------------------------------------------


def test_the_pinned_source_is_a_full_commit_of_the_official_repository():
    source = discourse_docker_source(DiscourseSettings())
    assert source.repository == "https://github.com/discourse/discourse_docker.git"
    assert re.fullmatch(r"[0-9a-f]{40}", source.commit) and not source.overridden
    assert source.commit == versions().discourse_docker.commit


def test_the_source_can_be_overridden_for_a_mirror(tmp_path):
    mirror = discourse_docker_source(DiscourseSettings(launcher={"repository": "/srv/mirrors/discourse_docker.git"}))
    assert (mirror.repository, mirror.commit, mirror.overridden) == (
        "/srv/mirrors/discourse_docker.git",
        versions().discourse_docker.commit,
        True,
    )
    other = discourse_docker_source(DiscourseSettings(launcher={"commit": "a" * 40}))
    assert other.commit == "a" * 40 and other.overridden
    stack = tmp_path / "stack.yaml"
    stack.write_text(yaml.safe_dump({
        "group": "g", "domain": "example.org", "admin_email": "a@example.org",
        "hosts": [{"name": "vps", "address": "203.0.113.7"}], "smtp": {"host": "smtp.example.net"},
        "discourse": {"enabled": True, "launcher": {"commit": "main"}},
    }))  # fmt: skip
    with pytest.raises(ProfileError, match=r"discourse\.launcher\.commit: expected a full 40-character git commit hash"):
        load_profile(stack)


def test_a_rebuild_happens_when_the_container_is_missing_or_its_inputs_changed():
    stamp = build_stamp(SOURCE.commit, "app: 1\n")
    assert rebuild_reason(None, None, stamp) == "the container does not exist yet"
    assert rebuild_reason("absent", stamp, stamp) == "the container does not exist yet"
    assert rebuild_reason("running", stamp, stamp) is None
    assert rebuild_reason("exited", stamp, stamp) is None  # started, not rebuilt
    assert rebuild_reason("running", None, stamp) is not None  # a container nobody recorded building
    assert rebuild_reason("running", build_stamp(SOURCE.commit, "app: 2\n"), stamp) is not None
    assert rebuild_reason("running", build_stamp("b" * 40, "app: 1\n"), stamp) is not None


def test_the_build_stamp_names_the_commit_and_a_digest_not_the_secrets():
    stamp = build_stamp(SOURCE.commit, f"DISCOURSE_SMTP_PASSWORD: {SMTP_PASSWORD}\n")
    assert stamp.startswith(f"discourse_docker={SOURCE.commit} app.yml=sha256:") and SMTP_PASSWORD not in stamp
