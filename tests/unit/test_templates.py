"""Every config file the stack writes, rendered offline for every preset, and checked by the real tool.

Each fixture in fixtures/templates/ is a group's stack.yaml (one per preset, plus variants). It is
rendered with plan.plan_host for hosts of 1, 2, 4 and 8 GB, amd64 and arm64, Debian bookworm
and trixie (combinations the preset refuses as too small are skipped). Every distinct rendered file
is then handed to the program that reads it on the host, where that program works offline:
caddy, nft, sshd, apt-config, visudo, systemd-analyze, postgres, redis-server, turnserver, php-fpm,
php and shellcheck. A check whose tool is missing is skipped and names the package that brings it.
"""

from __future__ import annotations

import configparser
import functools
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from commonstack import rendering
from commonstack.plan import HostPlan, Release, plan_host
from commonstack.rendering import ConfigFile
from commonstack.stacks.layers import LAYER_NAMES, firewall_ports, saved_paths
from commonstack.stacks.layers import layer as layer_of
from commonstack.stacks.loader import load_profile, preset_names
from commonstack.stacks.model import Host, StackProfile
from commonstack.stacks.repository import parse_repository
from commonstack.stacks.sizing import HostFacts, HostTooSmall
from commonstack.stacks.versions import versions

FIXTURES = Path(__file__).parent / "fixtures" / "templates"

MEMORY_GB = (1, 2, 4, 8)
ARCHES = ("amd64", "arm64")
CODENAMES = ("bookworm", "trixie")

SECRET_NAMES = (
    "postgres_nextcloud_password",
    "postgres_synapse_password",
    "synapse_registration_shared_secret",
    "synapse_macaroon_secret_key",
    "synapse_form_secret",
    "turn_shared_secret",
    "nextcloud_admin_password",
    "matrix_admin_password",
    "restic_password",
    "backup_ssh_seed",
    "smtp_password",
)

# Where each secret may appear. Secrets not listed (admin passwords, Nextcloud's database password)
# are used by the deploy through occ/register_new_matrix_user and appear in no config file.
SECRET_FILES = {
    "postgres_synapse_password": {"/etc/matrix-synapse/homeserver.yaml"},
    "synapse_registration_shared_secret": {"/etc/matrix-synapse/homeserver.yaml"},
    "synapse_macaroon_secret_key": {"/etc/matrix-synapse/homeserver.yaml"},
    "synapse_form_secret": {"/etc/matrix-synapse/homeserver.yaml"},
    "turn_shared_secret": {"/etc/matrix-synapse/homeserver.yaml", "/etc/turnserver.conf"},
    "restic_password": {"/etc/commonstack/restic-password"},
    "smtp_password": {"/etc/matrix-synapse/homeserver.yaml", "/var/discourse/containers/app.yml"},
}

# Executables that the deploy installs (our scripts, Synapse's virtualenv): systemd-analyze verify
# cannot find them on this machine, and that is the only complaint it may make about our units.
DEPLOYED_EXECUTABLES = {
    "/opt/synapse/venv/bin/python",
    "/usr/local/sbin/commonstack-backup",
    "/usr/local/sbin/commonstack-coturn-certificate",
}


def _newest(pattern: str, default: str) -> str:
    """The newest installed release of a versioned Debian tool (this machine may be bookworm or trixie)."""
    found = sorted(Path("/").glob(pattern.lstrip("/")), key=lambda p: [int(n) for n in re.findall(r"\d+", str(p))])
    return str(found[-1]) if found else default


# Files rendered for either release are checked with the PHP and PostgreSQL of this machine: the
# settings used exist in both (PHP 8.2/8.4, PostgreSQL 15/17).
PHP_FPM = _newest("/usr/sbin/php-fpm*", "/usr/sbin/php-fpm8.2")
PHP_CLI = PHP_FPM.replace("/usr/sbin/php-fpm", "/usr/bin/php")
POSTGRES = Path(_newest("/usr/lib/postgresql/*/bin/postgres", "/usr/lib/postgresql/15/bin/postgres"))


def secrets_for(profile: StackProfile) -> dict[str, str]:
    """Fake secrets; smtp_password exists only when the profile logs in to its relay (as the real store)."""
    names = [n for n in SECRET_NAMES if n != "smtp_password" or (profile.smtp and profile.smtp.username)]
    return {name: f"s3cr3t-{name}" for name in names}


@dataclass(frozen=True)
class Scenario:
    fixture: str
    profile: StackProfile
    host: Host
    plan: HostPlan

    @property
    def name(self) -> str:
        facts = self.plan.release.facts
        size = f"{round(facts.memory_mb / 1024)}G"
        return f"{self.fixture}:{self.host.name}:{size}-{facts.arch}-{self.plan.release.codename}"

    @property
    def services(self) -> frozenset[str]:
        return self.profile.services_on(self.host)

    def file(self, path: str) -> ConfigFile:
        return next(f for f in self.plan.files if f.path == path)

    def files(self, pattern: str) -> list[ConfigFile]:
        return [f for f in self.plan.files if re.fullmatch(pattern, f.path)]


def memtotal_mb(gb: int) -> int:
    # A host sold as N GB reports a little less in MemTotal (kernel, firmware): 94% of nominal.
    return gb * 1024 * 94 // 100


@functools.cache
def scenarios() -> tuple[Scenario, ...]:
    found = []
    for fixture in sorted(FIXTURES.glob("*.yaml")):
        profile = load_profile(fixture)
        secrets = secrets_for(profile)
        for host in profile.hosts:
            for gb, arch, codename in itertools.product(MEMORY_GB, ARCHES, CODENAMES):
                facts = HostFacts(memory_mb=memtotal_mb(gb), cpus=max(1, gb // 2), arch=arch)
                try:
                    plan = plan_host(profile, host, secrets, Release(facts, codename))
                except HostTooSmall:
                    continue
                found.append(Scenario(fixture.stem, profile, host, plan))
    return tuple(found)


def distinct(pattern: str) -> list[tuple[Scenario, ConfigFile]]:
    """The first scenario of every distinct rendering of the files matching a path pattern."""
    seen: dict[tuple[str, str], tuple[Scenario, ConfigFile]] = {}
    for scenario in scenarios():
        for file in scenario.files(pattern):
            key = (re.sub(r"\d+(\.\d+)?", "N", file.path), file.content)
            seen.setdefault(key, (scenario, file))
    return list(seen.values())


def by_file(pattern: str):
    """Parametrize a test over the distinct renderings of a file."""
    cases = distinct(pattern)
    return pytest.mark.parametrize(
        ("scenario", "file"), cases, ids=[f"{s.name}:{f.path}" for s, f in cases]
    )


def by_scenario(filter_=lambda s: True):
    cases = [s for s in scenarios() if filter_(s)]
    return pytest.mark.parametrize("scenario", cases, ids=[s.name for s in cases])


def need(tool: str, package: str) -> str:
    path = shutil.which(tool) or (tool if os.access(tool, os.X_OK) else None)
    if not path:
        pytest.skip(f"{tool} is not installed (apt-get install {package})")
    return path


def run(*args: str | Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def write(directory: Path, file: ConfigFile, content: str | None = None) -> Path:
    path = directory / file.path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(file.content if content is None else content)
    return path


# ---------------------------------------------------------------------------------------------
# The whole plan
# ---------------------------------------------------------------------------------------------


def test_every_preset_has_a_fixture_that_renders():
    rendered = {s.profile.preset for s in scenarios()}
    assert set(preset_names()) <= rendered
    for scenario in scenarios():
        assert scenario.plan.files, scenario.name
        assert len({f.path for f in scenario.plan.files}) == len(scenario.plan.files), "two templates, one path"


def test_hosts_that_fit_are_rendered_at_every_size_above_their_minimum():
    # A preset that renders at N GB renders at every larger size too (no template breaks on big hosts).
    sizes: dict[tuple[str, str], set[int]] = {}
    for s in scenarios():
        sizes.setdefault((s.fixture, s.host.name), set()).add(round(s.plan.release.facts.memory_mb / 1024))
    for key, seen in sizes.items():
        assert seen == {gb for gb in MEMORY_GB if gb >= min(seen)}, key
        assert 8 in seen, key


def test_release_paths_follow_the_debian_release():
    for s in scenarios():
        debian = versions().debian[s.plan.release.codename]
        for f in s.plan.files:
            assert "{" not in f.path, f.path
            if "/etc/php/" in f.path:
                assert f.path.startswith(f"/etc/php/{debian.php}/"), f.path
            if "/etc/postgresql/" in f.path:
                assert f.path.startswith(f"/etc/postgresql/{debian.postgresql}/"), f.path


def test_no_template_syntax_or_python_values_leak_into_files():
    for s in scenarios():
        for f in s.plan.files:
            assert "{{" not in f.content and "{%" not in f.content, (s.name, f.path)
            assert not re.search(r"\bNone\b|\bTrue\b|\bFalse\b", f.content), (s.name, f.path)
            assert f.content.endswith("\n"), (s.name, f.path)


def test_secrets_appear_only_in_the_files_meant_to_hold_them():
    for s in scenarios():
        for f in s.plan.files:
            for name, value in secrets_for(s.profile).items():
                if value in f.content:
                    assert f.path in SECRET_FILES.get(name, set()), f"{name} leaked into {f.path} ({s.name})"
                    assert f.user == "root", (s.name, f.path)
                    assert f.mode in ("0600", "0640"), f"{f.path} holds {name} but is mode {f.mode}"
                    if f.mode == "0640":
                        assert f.group != "root", f"{f.path}: 0640 for group root is pointless"


def test_each_secret_reaches_its_file():
    for s in scenarios():
        secrets = secrets_for(s.profile)
        paths = {f.path: f.content for f in s.plan.files}
        if "matrix" in s.services:
            homeserver = paths["/etc/matrix-synapse/homeserver.yaml"]
            for name in SECRET_FILES:
                if name.startswith(("synapse_", "postgres_synapse")):
                    assert secrets[name] in homeserver, (s.name, name)
        if "turn" in s.services:
            assert secrets["turn_shared_secret"] in paths["/etc/turnserver.conf"]
        if s.profile.backup.enabled:
            assert paths["/etc/commonstack/restic-password"] == secrets["restic_password"] + "\n"


def test_file_modes_are_valid_and_owners_are_known():
    for s in scenarios():
        for f in s.plan.files:
            assert re.fullmatch(r"0[0-7]{3}", f.mode), (f.path, f.mode)
            assert not int(f.mode, 8) & 0o002, f"{f.path} is world-writable"
            assert f.user in {"root"} and f.group in {"root", "matrix-synapse", "turnserver", "redis"}, f.path
        sudoers = s.file("/etc/sudoers.d/commonstack-admin")
        assert sudoers.mode == "0440"


def test_files_yaml_names_only_files_that_exist():
    for layer in LAYER_NAMES:
        meta = rendering._file_meta(layer)
        rendered_paths = {
            re.sub(r"/(php|postgresql)/[\d.]+/", r"/\1/V/", f.path)
            for s in scenarios()
            for f in s.plan.files
            if f.layer == layer
        }
        for path in meta:
            assert re.sub(r"/(php|postgresql)/[\d.]+/", r"/\1/V/", path) in rendered_paths, (layer, path)


# ---------------------------------------------------------------------------------------------
# base: nftables, sshd, unattended-upgrades, journald, sudo
# ---------------------------------------------------------------------------------------------


@by_file(r"/etc/nftables\.conf")
def test_nftables_ruleset_is_valid(scenario, file, tmp_path):
    nft = need("nft", "nftables")
    run(nft, "-c", "-f", write(tmp_path, file))


def _ruleset_in_a_throwaway_netns(nft: str, path: Path) -> list[dict] | None:
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    result = run(unshare, "--net", "sh", "-c", f'"{nft}" -f "{path}" && "{nft}" -j list ruleset', check=False)
    if result.returncode != 0 and "unshare" in result.stderr:
        return None  # no permission for network namespaces here
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["nftables"]


@by_scenario()
def test_nftables_opens_exactly_the_firewall_ports(scenario, tmp_path):
    nft = need("nft", "nftables")
    file = scenario.file("/etc/nftables.conf")
    wanted = {(p.proto, p.port) for p in firewall_ports(scenario.profile, scenario.host)}
    assert ("tcp", str(scenario.host.port)) in wanted
    ruleset = _ruleset_in_a_throwaway_netns(nft, write(tmp_path, file))
    if ruleset is None:  # no network namespace: read the rules from the text
        opened = set(re.findall(r"^\s*(tcp|udp) dport (\S+) accept", file.content, re.M))
        assert opened == wanted
        return
    chains = {o["chain"]["name"]: o["chain"] for o in ruleset if "chain" in o}
    assert chains["input"]["policy"] == "drop"
    assert chains["forward"]["policy"] == "drop"
    assert chains["output"]["policy"] == "accept"
    opened = set()
    for item in ruleset:
        rule = item.get("rule")
        if not rule or rule["chain"] != "input" or not any("accept" in e for e in rule["expr"]):
            continue
        assert any("match" in e for e in rule["expr"]), f"an unconditional accept opens everything: {rule}"
        for expr in rule["expr"]:
            match = expr.get("match", {})
            left = match.get("left", {})
            if isinstance(left, dict) and left.get("payload", {}).get("field") == "dport":
                right = match["right"]
                port = f"{right['range'][0]}-{right['range'][1]}" if isinstance(right, dict) else str(right)
                opened.add((left["payload"]["protocol"], port))
    assert opened == wanted, f"{scenario.name}: opens {sorted(opened)}, wants {sorted(wanted)}"
    if "discourse" in scenario.services:
        # Reloading the firewall must not flush the NAT rules Docker keeps in the same ruleset.
        assert "flush ruleset" not in file.content
    else:
        assert file.content.splitlines()[0] == "#!/usr/sbin/nft -f" and "\nflush ruleset\n" in file.content


@by_file(r"/etc/ssh/sshd_config\.d/.*")
def test_sshd_accepts_the_drop_in_and_it_takes_effect(scenario, file, tmp_path):
    sshd = need("/usr/sbin/sshd", "openssh-server")
    keygen = need("ssh-keygen", "openssh-client")
    drop_in = write(tmp_path, file)
    run(keygen, "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "host_ed25519")
    config = tmp_path / "sshd_config"
    # Like Debian's sshd_config: the drop-ins are included before any other setting.
    config.write_text(
        f"Include {drop_in}\nHostKey {tmp_path / 'host_ed25519'}\nPidFile none\n"
        "PasswordAuthentication yes\nPermitRootLogin yes\nX11Forwarding yes\nAllowTcpForwarding yes\n"
        "AllowAgentForwarding yes\n"
    )
    run(sshd, "-t", "-f", config)
    effective = run(sshd, "-T", "-f", config, "-C", "user=root,host=client.example,addr=192.0.2.1").stdout
    settings = dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["permitrootlogin"] in ("prohibit-password", "without-password")
    for forwarding in ("x11forwarding", "allowtcpforwarding", "allowagentforwarding", "allowstreamlocalforwarding",
                       "permittunnel"):  # fmt: skip
        assert settings[forwarding] == "no", forwarding
    assert settings["loglevel"] == "VERBOSE", "fail2ban counts refused keys, which sshd logs at VERBOSE"
    assert int(settings["maxauthtries"]) <= 4
    assert settings["port"] == str(scenario.host.port)


@by_file(r"/etc/apt/apt\.conf\.d/.*")
def test_apt_reads_the_unattended_upgrades_config(scenario, file, tmp_path):
    apt_config = need("apt-config", "apt")
    dump = run(apt_config, "-c", write(tmp_path, file), "dump").stdout
    if file.path.endswith("20auto-upgrades"):
        assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
        assert 'APT::Periodic::Update-Package-Lists "1";' in dump
    else:
        codename = scenario.plan.release.codename
        assert f'"origin=Debian,codename={codename}-security,label=Debian-Security"' in dump
        assert 'Unattended-Upgrade::Automatic-Reboot "false";' in dump
        assert 'Unattended-Upgrade::Remove-Unused-Dependencies "true";' in dump


@by_file(r"/etc/systemd/journald\.conf\.d/.*")
def test_journald_drop_in_caps_the_journal(scenario, file):
    # journald has no config-check mode; parse it as systemd does (INI) and check the keys exist
    # in journald.conf(5) (the names below are its [Journal] options).
    parser = configparser.ConfigParser(strict=True)
    parser.optionxform = str
    parser.read_string(file.content)
    assert parser.sections() == ["Journal"]
    known = {"Storage", "Compress", "SystemMaxUse", "SystemKeepFree", "SystemMaxFileSize", "MaxRetentionSec",
             "MaxFileSec", "RuntimeMaxUse", "ForwardToSyslog", "RateLimitIntervalSec", "RateLimitBurst"}
    assert set(parser["Journal"]) <= known
    assert re.fullmatch(r"\d+[KMG]", parser["Journal"]["SystemMaxUse"])


@by_file(r"/etc/sudoers\.d/.*")
def test_sudoers_drop_in_is_valid(scenario, file, tmp_path):
    visudo = need("visudo", "sudo")
    path = write(tmp_path, file)
    path.chmod(0o440)
    run(visudo, "-c", "-f", path)
    assert file.content.splitlines()[-1].startswith(f"{scenario.profile.admin.user} ALL=(ALL:ALL) NOPASSWD: ALL")


# ---------------------------------------------------------------------------------------------
# postgres, redis
# ---------------------------------------------------------------------------------------------

@by_file(r"/etc/postgresql/.*/conf\.d/.*")
def test_postgres_knows_every_setting_and_accepts_every_value(scenario, file):
    postgres = need(str(POSTGRES), "postgresql")
    known = {line.split("\t", 1)[0] for line in run(postgres, "--describe-config").stdout.splitlines()}
    names = re.findall(r"^\s*([a-z_]+)\s*=", file.content, re.M)
    assert names and set(names) <= known, set(names) - known
    settings = dict(re.findall(r"^\s*([a-z_]+)\s*=\s*(.+?)\s*$", file.content, re.M))
    assert settings["listen_addresses"] == "'localhost'"
    assert settings["password_encryption"] == "'scram-sha-256'"
    assert settings["shared_buffers"] == f"{scenario.plan.sizing.postgres_shared_buffers_mb}MB"
    assert settings["max_connections"] == str(scenario.plan.sizing.postgres_max_connections)

    # The values: postgres parses a config file that includes ours (-C prints one setting and exits).
    if os.geteuid() != 0:
        pytest.skip("checking the values needs root (postgres refuses to run as root, so we switch to its user)")
    datadir = Path(tempfile.mkdtemp(prefix="pg-"))
    try:
        (datadir / "PG_VERSION").write_text(POSTGRES.parts[-3] + "\n")
        (datadir / "50-commonstack.conf").write_text(file.content)
        (datadir / "postgresql.conf").write_text("include '50-commonstack.conf'\n")
        shutil.chown(datadir, "postgres")
        for child in datadir.iterdir():
            shutil.chown(child, "postgres")
        result = run("runuser", "-u", "postgres", "--", postgres, "-D", datadir, "-C", "shared_buffers", check=False)
        assert result.returncode == 0, result.stderr
    finally:
        shutil.rmtree(datadir)


@by_file(r"/etc/redis/redis\.conf")
def test_redis_starts_with_the_config(scenario, file, tmp_path):
    redis_server = need("redis-server", "redis-server")
    redis_cli = need("redis-cli", "redis-tools")
    assert "\nunixsocket /run/redis/redis-server.sock\n" in file.content
    assert "\nport 0\n" in file.content
    socket_path = tmp_path / "redis.sock"
    # The real file, with the host paths pointed into the test's directory and no systemd.
    process = subprocess.Popen(
        [redis_server, str(write(tmp_path, file)), "--unixsocket", str(socket_path), "--dir", str(tmp_path),
         "--pidfile", str(tmp_path / "redis.pid"), "--supervised", "no", "--daemonize", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start:\n{process.communicate(timeout=5)[0]}")
            time.sleep(0.05)

        def get(name: str) -> str:
            return run(redis_cli, "-s", socket_path, "config", "get", name).stdout.split("\n")[1]

        assert get("maxmemory") == str(scenario.plan.sizing.redis_maxmemory_mb * 1024 * 1024)
        assert get("maxmemory-policy") == "allkeys-lru"
        assert get("port") == "0"
        assert get("unixsocketperm") == "770"
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# caddy
# ---------------------------------------------------------------------------------------------


@functools.cache
def _test_ca(directory: str) -> Path:
    openssl = need("openssl", "openssl")
    pem = Path(directory) / "acme-ca-root.pem"
    run(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", Path(directory) / "acme-ca-root.key", "-out", pem, "-days", "2", "-subj", "/CN=test ACME root")
    return pem


def _caddy(tmp_path: Path, file: ConfigFile, *command: str) -> subprocess.CompletedProcess:
    caddy = need("caddy", "caddy")
    # acme_ca_root names the path the deploy copies the CA's root to; caddy validate loads it.
    content = file.content.replace("/etc/caddy/acme-ca-root.pem", str(_test_ca(str(tmp_path))))
    path = write(tmp_path, file, content)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    return run(caddy, *command, "--config", path, "--adapter", "caddyfile", env=env)


@by_file(r"/etc/caddy/Caddyfile")
def test_caddy_validates_the_caddyfile(scenario, file, tmp_path):
    result = _caddy(tmp_path, file, "validate")
    assert "Valid configuration" in result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if '"level":"warn"' in line or '"level":"error"' in line]
    assert not warnings, "\n".join(warnings)


@by_file(r"/etc/caddy/Caddyfile")
def test_caddyfile_is_formatted_as_caddy_fmt_would(scenario, file, tmp_path):
    caddy = need("caddy", "caddy")
    formatted = run(caddy, "fmt", write(tmp_path, file)).stdout
    assert formatted == file.content


def _site_routes(config: dict) -> dict[str, dict]:
    """Each site of the adapted config by hostname (one route per site block)."""
    sites: dict[str, dict] = {}
    for server in config["apps"]["http"]["servers"].values():
        for route in server["routes"]:
            for match in route.get("match", []):
                for host in match.get("host", []):
                    assert host not in sites, f"two sites for {host}"
                    sites[host] = route
    return sites


def _static_responses(route: dict) -> dict[str, dict]:
    """Path -> (headers set, body) of every `respond` under a route, by its path matcher."""
    found: dict[str, dict] = {}

    def walk(routes, paths=()):
        for r in routes:
            here = [p for m in r.get("match", []) for p in m.get("path", [])] or list(paths)
            headers: dict[str, list[str]] = {}
            for handler in r.get("handle", []):
                if handler["handler"] == "headers":
                    headers.update(handler.get("response", {}).get("set", {}))
                if handler["handler"] == "static_response":
                    for p in here:
                        found[p] = {"headers": headers, "body": handler.get("body", "")}
                if handler["handler"] == "subroute":
                    walk(handler["routes"], here)

    walk([route])
    return found


@by_scenario(lambda s: "caddy" in s.plan.layers)
def test_caddyfile_serves_one_site_per_hostname_and_delegates_matrix(scenario, tmp_path):
    file = scenario.file("/etc/caddy/Caddyfile")
    config = json.loads(_caddy(tmp_path, file, "adapt").stdout)
    sites = _site_routes(config)
    on_host = {name for service, name in scenario.profile.hostnames().items() if service in scenario.services}
    delegated = "matrix" in scenario.services
    assert set(sites) == on_host | ({scenario.profile.server_name} if delegated else set())
    if delegated:
        matrix = scenario.profile.hostnames()["matrix"]
        responses = _static_responses(sites[scenario.profile.server_name])
        server, client = responses["/.well-known/matrix/server"], responses["/.well-known/matrix/client"]
        assert json.loads(server["body"]) == {"m.server": f"{matrix}:443"}
        assert json.loads(client["body"]) == {"m.homeserver": {"base_url": f"https://{matrix}"}}
        for response in (server, client):
            assert response["headers"]["Content-Type"] == ["application/json"]
            assert response["headers"]["Access-Control-Allow-Origin"] == ["*"]
    else:
        assert "/.well-known/matrix" not in file.content


@by_scenario(lambda s: "caddy" in s.plan.layers)
def test_caddy_tls_follows_the_profile(scenario, tmp_path):
    file = scenario.file("/etc/caddy/Caddyfile")
    tls = scenario.profile.tls
    config = json.loads(_caddy(tmp_path, file, "adapt").stdout)
    policies = config.get("apps", {}).get("tls", {}).get("automation", {}).get("policies", [])
    issuers = [i for p in policies for i in p.get("issuers", [])]
    if tls.mode == "internal":
        assert "\tlocal_certs\n" in file.content
        assert issuers and all(i["module"] == "internal" for i in issuers)
    else:
        assert "local_certs" not in file.content
        assert f"\temail {scenario.profile.tls_email}\n" in file.content
        if tls.acme_ca:
            assert issuers and all(i["module"] == "acme" and i["ca"] == tls.acme_ca for i in issuers)
            if tls.acme_ca_root:
                assert "\tacme_ca_root /etc/caddy/acme-ca-root.pem\n" in file.content
        else:
            assert "acme_ca" not in file.content  # Caddy's defaults: Let's Encrypt, ZeroSSL as fallback


@by_scenario(lambda s: "caddy" in s.plan.layers)
def test_caddy_backends_match_the_services(scenario):
    content = scenario.file("/etc/caddy/Caddyfile").content
    php = versions().debian[scenario.plan.release.codename].php
    assert ("php_fastcgi unix//run/php/php%s-fpm-nextcloud.sock" % php in content) == ("nextcloud" in scenario.services)
    assert ("reverse_proxy 127.0.0.1:8008" in content) == ("matrix" in scenario.services)
    assert ("unix//var/discourse/shared/standalone/nginx.http.sock" in content) == ("discourse" in scenario.services)
    if "nextcloud" in scenario.services:
        for denied in ("/build", "/tests", "/config", "/lib", "/3rdparty", "/templates", "/data", "/.*"):
            assert f" {denied} " in content
        assert "redir /.well-known/carddav /remote.php/dav/ permanent" in content
        assert "max_size 10GB" in content


# ---------------------------------------------------------------------------------------------
# synapse
# ---------------------------------------------------------------------------------------------


@by_scenario(lambda s: "synapse" in s.plan.layers)
def test_synapse_homeserver_yaml(scenario):
    file = scenario.file("/etc/matrix-synapse/homeserver.yaml")
    assert (file.mode, file.group) == ("0640", "matrix-synapse")
    config = yaml.safe_load(file.content)
    profile, sizing = scenario.profile, scenario.plan.sizing
    matrix = profile.hostnames()["matrix"]
    secrets = secrets_for(profile)
    assert config["server_name"] == profile.server_name
    assert config["public_baseurl"] == f"https://{matrix}/"
    (listener,) = config["listeners"]
    assert listener["port"] == 8008 and listener["bind_addresses"] == ["127.0.0.1"]
    assert listener["x_forwarded"] is True and listener["tls"] is False
    assert set(listener["resources"][0]["names"]) == {"client", "federation"}
    db = config["database"]
    assert db["name"] == "psycopg2"
    assert db["args"]["user"] == "synapse" and db["args"]["dbname"] == "synapse"
    assert db["args"]["password"] == secrets["postgres_synapse_password"]
    assert 1 <= db["args"]["cp_min"] <= db["args"]["cp_max"] <= sizing.postgres_max_connections - 3
    assert config["signing_key_path"] == "/etc/matrix-synapse/signing.key"
    assert config["media_store_path"] == "/var/lib/matrix-synapse/media"
    assert config["log_config"] == "/etc/matrix-synapse/log.yaml"
    for name in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
        assert config[name] == secrets[f"synapse_{name}"]
    assert config["report_stats"] is False
    if profile.matrix.registration == "token":
        assert config["enable_registration"] is True and config["registration_requires_token"] is True
    else:
        assert config["enable_registration"] is False and "registration_requires_token" not in config
    assert config["caches"]["global_factor"] == sizing.synapse_cache_factor
    assert config["presence"]["enabled"] is (sizing.synapse_cache_factor > 0.5)
    assert config["suppress_key_server_warning"] is True
    if "turn" in scenario.services:
        assert config["turn_shared_secret"] == secrets["turn_shared_secret"]
        assert {uri.split(":")[0] for uri in config["turn_uris"]} == {"turn", "turns"}
        assert all(f":{matrix}:" in uri for uri in config["turn_uris"])
        assert {uri.split("transport=")[1] for uri in config["turn_uris"]} == {"udp", "tcp"}
        assert config["turn_user_lifetime"]
    else:
        assert "turn_uris" not in config and "turn_shared_secret" not in config
    if profile.smtp:
        email = config["email"]
        assert email["smtp_host"] == profile.smtp.host and email["smtp_port"] == profile.smtp.port
        assert ("smtp_pass" in email) == bool(profile.smtp.username)
        if profile.smtp.username:
            assert email["smtp_pass"] == secrets["smtp_password"]
    else:
        assert "email" not in config


_SYNAPSE_CHECK = r"""
import json, logging.config, sys, yaml
from synapse.config.homeserver import HomeServerConfig

cases = json.loads(sys.argv[1])
# Every case points at the same test signing key: generate it once.
HomeServerConfig.load_or_generate_config("check", ["-c", cases[0]["config"], "--generate-keys"])
results = []
for case in cases:
    try:
        config = HomeServerConfig.load_config("check", ["-c", case["config"]])
        logging.config.dictConfig(yaml.safe_load(open(case["log"])))
        results.append({
            "server_name": config.server.server_name,
            "public_baseurl": config.server.public_baseurl,
            "global_factor": config.caches.global_factor,
            "presence": config.server.presence_enabled,
            "turn_uris": config.voip.turn_uris,
            "registration": config.registration.enable_registration,
        })
    except Exception as exc:  # report every file, not only the first failure
        results.append({"error": f"{type(exc).__name__}: {exc}"})
print(json.dumps(results))
"""


def _synapse_python() -> str | None:
    """A Python that can import Synapse: $SYNAPSE_PYTHON, else the one running the tests."""
    for python in (os.environ.get("SYNAPSE_PYTHON"), sys.executable):
        if python and subprocess.run([python, "-c", "import synapse"], capture_output=True).returncode == 0:
            return python
    return None


def test_synapse_reads_its_config(tmp_path):
    # Synapse's own config loader is the real validator of homeserver.yaml and log.yaml. It is a large
    # install (~250 MB), so it is used where a volunteer or CI provides it.
    python = _synapse_python()
    if python is None:
        pytest.skip(
            "Synapse is not installed (pip install 'matrix-synapse[postgres]==%s' into a venv, then set "
            "SYNAPSE_PYTHON to its python)" % versions().synapse.version
        )
    signing_key = tmp_path / "signing.key"
    cases, expected = [], []
    for index, (scenario, file) in enumerate(distinct(r"/etc/matrix-synapse/homeserver\.yaml")):
        log = write(tmp_path / str(index), scenario.file("/etc/matrix-synapse/log.yaml"))
        # The host paths of the signing key and log config point into the test's directory.
        content = file.content.replace("/etc/matrix-synapse/signing.key", str(signing_key))
        content = content.replace("/etc/matrix-synapse/log.yaml", str(log))
        cases.append({"config": str(write(tmp_path / str(index), file, content)), "log": str(log)})
        expected.append(scenario)
    result = run(python, "-c", _SYNAPSE_CHECK, json.dumps(cases), cwd=tmp_path)
    for scenario, loaded in zip(expected, json.loads(result.stdout.splitlines()[-1]), strict=True):
        assert "error" not in loaded, f"{scenario.name}: {loaded.get('error')}"
        assert loaded["server_name"] == scenario.profile.server_name
        assert loaded["public_baseurl"] == f"https://{scenario.profile.hostnames()['matrix']}/"
        assert loaded["global_factor"] == scenario.plan.sizing.synapse_cache_factor
        assert loaded["presence"] is (scenario.plan.sizing.synapse_cache_factor > 0.5)
        assert bool(loaded["turn_uris"]) == ("turn" in scenario.services)
        assert loaded["registration"] is (scenario.profile.matrix.registration == "token")


@by_file(r"/etc/matrix-synapse/log\.yaml")
def test_synapse_log_config_is_a_logging_dict_config(scenario, file):
    config = yaml.safe_load(file.content)
    assert config["version"] == 1
    # Logging configured with Synapse's own filter class cannot be loaded without Synapse; check the
    # wiring instead: every handler's formatter/filters exist and the root logs to stderr (journal).
    for handler in config["handlers"].values():
        assert handler["formatter"] in config["formatters"]
        assert set(handler.get("filters", [])) <= set(config["filters"])
    assert config["handlers"]["console"]["stream"] == "ext://sys.stderr"
    assert config["root"]["handlers"] == ["console"]
    assert config["loggers"]["synapse.storage.SQL"]["level"] == "WARNING"
    assert config["filters"]["context"]["()"] == "synapse.logging.context.LoggingContextFilter"


# ---------------------------------------------------------------------------------------------
# systemd units
# ---------------------------------------------------------------------------------------------


def _unit_groups() -> list[tuple[Scenario, list[ConfigFile]]]:
    """Each distinct set of units of a layer (a timer is verified with the service it starts)."""
    groups: dict[tuple, tuple[Scenario, list[ConfigFile]]] = {}
    for s in scenarios():
        by_layer: dict[str, list[ConfigFile]] = {}
        for f in s.files(r"/etc/systemd/system/.*\.(service|timer)"):
            by_layer.setdefault(f.layer, []).append(f)
        for layer, files in by_layer.items():
            key = (layer, tuple((f.path, f.content) for f in files))
            groups.setdefault(key, (s, files))
    return list(groups.values())


_UNIT_GROUPS = _unit_groups()


@pytest.mark.parametrize(
    ("scenario", "units"), _UNIT_GROUPS, ids=[f"{s.name}:{units[0].layer}" for s, units in _UNIT_GROUPS]
)
def test_systemd_analyze_verifies_the_units(scenario, units, tmp_path):
    # systemd-analyze verify loads unit files offline (no systemd as PID 1 needed); it reports unknown
    # keys and bad values as warnings with exit code 0, so its whole output is checked.
    analyze = need("systemd-analyze", "systemd")
    paths = [write(tmp_path, unit) for unit in units]
    result = run(analyze, "verify", "--man=no", *paths, check=False, cwd=tmp_path)
    complaints = []
    for line in (result.stdout + result.stderr).splitlines():
        missing = re.search(r"Command (\S+) is not executable: No such file or directory", line)
        if missing and missing.group(1) in DEPLOYED_EXECUTABLES:
            continue
        complaints.append(line)
    assert not complaints, "\n".join(complaints)
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read_string(unit.content)
        if unit.path.endswith(".timer"):
            started = parser["Timer"].get("Unit", Path(unit.path).with_suffix(".service").name)
            assert started in {Path(u.path).name for u in units}, f"{unit.path} starts {started}, not rendered"
            assert parser["Install"]["WantedBy"] == "timers.target"
            calendar = parser["Timer"].get("OnCalendar")
            if calendar:
                run(analyze, "calendar", calendar)


@by_scenario(lambda s: "synapse" in s.plan.layers)
def test_synapse_unit_preloads_jemalloc_for_the_architecture(scenario):
    unit = scenario.file("/etc/systemd/system/matrix-synapse.service").content
    triplet = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[scenario.plan.release.facts.arch]
    assert f"\nEnvironment=LD_PRELOAD=/usr/lib/{triplet}/libjemalloc.so.2\n" in unit
    assert "\nType=notify\n" in unit and "\nUser=matrix-synapse\n" in unit
    assert (
        "\nExecStart=/opt/synapse/venv/bin/python -m synapse.app.homeserver"
        " --config-path=/etc/matrix-synapse/homeserver.yaml\n" in unit
    )


@by_scenario(lambda s: "nextcloud" in s.plan.layers)
def test_nextcloud_cron_runs_every_five_minutes_as_www_data(scenario):
    service = scenario.file("/etc/systemd/system/nextcloud-cron.service").content
    timer = scenario.file("/etc/systemd/system/nextcloud-cron.timer").content
    for line in ("Type=oneshot", "User=www-data", "ExecStart=/usr/bin/php -f /var/www/nextcloud/cron.php",
                 "KillMode=process"):
        assert f"\n{line}\n" in service
    for line in ("OnBootSec=5min", "OnUnitActiveSec=5min", "Unit=nextcloud-cron.service"):
        assert f"\n{line}\n" in timer


# ---------------------------------------------------------------------------------------------
# coturn
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@by_file(r"/etc/turnserver\.conf")
def test_turnserver_starts_with_the_config(scenario, file, tmp_path):
    turnserver = need("turnserver", "coturn")
    openssl = need("openssl", "openssl")
    denied = re.findall(r"^denied-peer-ip=(.+)$", file.content, re.M)
    for network in ("10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255",
                    "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255", "100.64.0.0-100.127.255.255",
                    "::1-::1", "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert network in denied
    turn = scenario.profile.matrix.turn
    assert f"\nmin-port={turn.min_port}\nmax-port={turn.max_port}\n" in file.content
    assert ("external-ip=" in file.content) == bool(turn.external_ip)
    for flag in ("use-auth-secret", "no-cli", "no-multicast-peers", "no-tcp-relay"):
        assert f"\n{flag}\n" in file.content
    assert f"\nrealm={scenario.profile.hostnames()['matrix']}\n" in file.content

    # Run the real server for a moment, on loopback and free ports only, with a throwaway
    # certificate: coturn refuses unknown options and reports bad values as it starts. The
    # config's `syslog` line is dropped so that its log comes to us instead of the journal.
    run(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", tmp_path / "turn.key", "-out", tmp_path / "turn.crt", "-days", "1", "-subj", "/CN=turn.test")
    conf = write(tmp_path, file, re.sub(r"^syslog$", "", file.content, flags=re.M))
    relay = _free_port()
    args = [turnserver, "-c", conf, "--log-file=stdout", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            f"--listening-port={_free_port()}", f"--tls-listening-port={_free_port()}",
            f"--min-port={relay}", f"--max-port={relay + 2}", f"--pidfile={tmp_path / 'turn.pid'}",
            f"--userdb={tmp_path / 'turndb'}", f"--cert={tmp_path / 'turn.crt'}", f"--pkey={tmp_path / 'turn.key'}"]
    process = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Until it has started its servers (at most 30 s on a loaded machine), and a second more for
    # what it reports after that.
    stop = threading.Timer(30, process.terminate)
    stop.start()
    printed = []
    for line in process.stdout:
        printed.append(line)
        if "Total General servers" in line:
            time.sleep(1)
            break
    stop.cancel()
    process.terminate()
    output = "".join(printed) + process.communicate(timeout=10)[0]
    bad = [line for line in output.splitlines() if re.search(r"Bad configuration|ERROR|Wrong", line)]
    assert not bad, "\n".join(bad)
    assert "Total General servers" in output, output
    assert set(re.findall(r"Black listing: (\S+)", output)) == set(denied)


@by_scenario(lambda s: "coturn" in s.plan.layers)
def test_coturn_tls_certificate_is_kept_current(scenario, tmp_path):
    conf = scenario.file("/etc/turnserver.conf")
    assert (conf.mode, conf.group) == ("0640", "turnserver")
    script = scenario.file("/usr/local/sbin/commonstack-coturn-certificate")
    assert script.mode == "0755"
    matrix = scenario.profile.hostnames()["matrix"]
    service = scenario.file("/etc/systemd/system/coturn-certificate.service").content
    assert f"\nExecStart=/usr/local/sbin/commonstack-coturn-certificate {matrix}\n" in service
    assert "\ncert=/etc/coturn/tls/turn.crt\npkey=/etc/coturn/tls/turn.key\n" in conf.content


# ---------------------------------------------------------------------------------------------
# nextcloud: php-fpm pool and php.ini
# ---------------------------------------------------------------------------------------------


@by_file(r"/etc/php/[\d.]+/fpm/pool\.d/nextcloud\.conf")
def test_php_fpm_accepts_the_pool(scenario, file, tmp_path):
    php_fpm = need(PHP_FPM, "php-fpm")
    pool = write(tmp_path, file)
    wrapper = tmp_path / "php-fpm.conf"
    wrapper.write_text(
        f"[global]\npid = {tmp_path}/php-fpm.pid\nerror_log = {tmp_path}/php-fpm.log\ninclude = {pool}\n"
    )
    result = run(php_fpm, "-n", "-t", "-y", wrapper, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test is successful" in result.stdout + result.stderr
    sizing = scenario.plan.sizing
    php = versions().debian[scenario.plan.release.codename].php
    settings = dict(re.findall(r"^([\w.\[\]]+) = (.*)$", file.content, re.M))
    assert settings["listen"] == f"/run/php/php{php}-fpm-nextcloud.sock"
    assert (settings["user"], settings["listen.group"], settings["listen.mode"]) == ("www-data", "caddy", "0660")
    assert settings["pm"] == "dynamic"
    assert settings["pm.max_children"] == str(sizing.php_fpm_max_children)
    assert settings["clear_env"] == "no"
    assert settings["env[PATH]"]


@by_file(r"/etc/php/[\d.]+/(fpm|cli)/conf\.d/90-nextcloud\.ini")
def test_php_reads_the_nextcloud_ini(scenario, file, tmp_path):
    php = need(PHP_CLI, "php-cli")
    ini = write(tmp_path, file)
    extensions = ["-d", "zend_extension=opcache"]
    has_apcu = Path(run(php, "-r", "echo ini_get('extension_dir');").stdout, "apcu.so").exists()
    if has_apcu:
        extensions += ["-d", "extension=apcu"]
    names = ["memory_limit", "upload_max_filesize", "post_max_size", "output_buffering", "opcache.enable",
             "opcache.memory_consumption", "opcache.interned_strings_buffer", "opcache.save_comments",
             "opcache.revalidate_freq", "apc.enable_cli"]
    code = "echo json_encode(array_map('ini_get', %s));" % json.dumps(names).replace('"', "'")
    result = run(php, "-n", "-c", ini, *extensions, "-r", code)
    assert "Warning" not in result.stdout + result.stderr and "error" not in result.stderr.lower(), result
    values = dict(zip(names, json.loads(result.stdout)))
    sizing = scenario.plan.sizing
    assert values["memory_limit"] == f"{sizing.php_memory_limit_mb}M" and sizing.php_memory_limit_mb >= 512
    assert values["upload_max_filesize"] == values["post_max_size"] == "10G"
    assert values["output_buffering"] == "0"
    assert values["opcache.enable"] == "1" and values["opcache.save_comments"] == "1"
    assert values["opcache.memory_consumption"] == str(sizing.opcache_memory_mb)
    assert int(values["opcache.interned_strings_buffer"]) >= 16
    assert values["opcache.revalidate_freq"] == "60"
    if "/cli/" in file.path:
        assert "apc.enable_cli = 1" in file.content
        if has_apcu:
            assert values["apc.enable_cli"] == "1"
    else:
        assert "apc.enable_cli" not in file.content


# ---------------------------------------------------------------------------------------------
# discourse
# ---------------------------------------------------------------------------------------------


@by_scenario(lambda s: "discourse" in s.plan.layers)
def test_discourse_app_yml(scenario):
    file = scenario.file("/var/discourse/containers/app.yml")
    assert (file.mode, file.user) == ("0600", "root")
    config = yaml.safe_load(file.content)
    assert "templates/web.socketed.template.yml" in config["templates"]
    for template in ("postgres", "redis", "web", "web.ratelimited"):
        assert f"templates/{template}.template.yml" in config["templates"]
    assert not any("ssl" in t for t in config["templates"]), "Caddy terminates TLS"
    assert "expose" not in config
    sizing, profile, smtp = scenario.plan.sizing, scenario.profile, scenario.profile.smtp
    assert config["params"]["db_shared_buffers"] == f"{sizing.discourse_db_shared_buffers_mb}MB"
    assert config["params"]["db_default_text_search_config"] == "pg_catalog.english"
    env = config["env"]
    assert env["UNICORN_WORKERS"] == sizing.discourse_unicorn_workers >= 1
    assert env["LANG"] == env["LC_ALL"] == "en_US.UTF-8"
    assert env["DISCOURSE_HOSTNAME"] == profile.hostnames()["discourse"]
    assert env["DISCOURSE_DEVELOPER_EMAILS"] == profile.admin_email
    assert env["DISCOURSE_SMTP_ADDRESS"] == smtp.host and env["DISCOURSE_SMTP_PORT"] == smtp.port
    assert ("DISCOURSE_SMTP_PASSWORD" in env) == bool(smtp.username)
    if smtp.username:
        assert env["DISCOURSE_SMTP_USER_NAME"] == smtp.username
        assert env["DISCOURSE_SMTP_PASSWORD"] == secrets_for(profile)["smtp_password"]
    assert isinstance(env["DISCOURSE_SMTP_ENABLE_START_TLS"], bool)
    assert env["DISCOURSE_NOTIFICATION_EMAIL"] == (smtp.from_address or f"noreply@{profile.domain}")
    volumes = {v["volume"]["guest"]: v["volume"]["host"] for v in config["volumes"]}
    assert volumes["/shared"] == "/var/discourse/shared/standalone"
    assert volumes["/var/log"] == "/var/discourse/shared/standalone/log/var-log"


# ---------------------------------------------------------------------------------------------
# backup
# ---------------------------------------------------------------------------------------------


@by_file(r"/usr/local/sbin/.*")
def test_shell_scripts_pass_shellcheck(scenario, file, tmp_path):
    path = write(tmp_path, file)
    shell = "bash" if file.content.startswith("#!/bin/bash\n") else "sh"
    run(shell, "-n", path)
    shellcheck = need("shellcheck", "shellcheck")
    run(shellcheck, f"--shell={shell}", "--severity=info", path)


@by_scenario(lambda s: "backup" in s.plan.layers)
def test_backup_saves_what_the_registry_declares_for_the_hosts_layers(scenario):
    """The script is rendered from the registry: each layer of the host has its dumps, paths,
    exclusions, pause and version in it, and no other layer's."""
    profile, host_layers = scenario.profile, scenario.plan.layers
    script = scenario.file("/usr/local/sbin/commonstack-backup")
    assert script.mode == "0700" and script.content.startswith("#!/bin/bash\n")
    commands = re.sub(r"\\\n\s*", "", script.content)  # join continued lines
    dumped = set(re.findall(r"pg_dump --format=custom --lock-wait-timeout=\S+(?: --exclude-table-data=\S+)* (\w+)\)", commands))
    declared = {d.database for name in host_layers if (b := layer_of(name).backup) for d in b.dumps}
    assert dumped == declared, (dumped, declared)
    for name in LAYER_NAMES:
        spec = layer_of(name).backup
        if not spec:
            continue
        for path in spec.saved:
            assert (path in script.content) == (name in host_layers) or any(
                path.startswith(other + "/") for other in saved_paths(host_layers)
            ), (name, path)
        if spec.pause:
            assert (spec.pause in script.content) == (name in host_layers)
    if "synapse" in host_layers:
        assert "--exclude-table-data=e2e_one_time_keys_json synapse)" in commands
        assert "/var/lib/matrix-synapse/media/local_content" in script.content
        assert "remote_content" not in script.content, "remote media is not saved"
    if "nextcloud" in host_layers:  # maintenance mode always ends: the EXIT trap resumes what was paused
        assert "trap finish_run EXIT" in script.content and "maintenance:mode --off" in script.content
    retention = profile.backup.retention
    assert (
        f"--keep-daily {retention.daily} --keep-weekly {retention.weekly} --keep-monthly {retention.monthly}"
        in commands
    )
    assert '--tag "commonstack,$KIND" --host "$HOST"' in commands
    assert f"HOST={scenario.host.name}\n" in script.content
    timer = scenario.file("/etc/systemd/system/commonstack-backup.timer").content
    assert f"\nOnCalendar={profile.backup.schedule}\n" in timer
    assert "\nPersistent=true\n" in timer and "\nRandomizedDelaySec=" in timer
    service = scenario.file("/etc/systemd/system/commonstack-backup.service").content
    assert "\nType=oneshot\n" in service and "\nExecStart=/usr/local/sbin/commonstack-backup run --tag routine\n" in service
    check = scenario.file("/etc/systemd/system/commonstack-backup-check.service").content
    assert f"\nOnCalendar={profile.backup.check_schedule}\n" in scenario.file(
        "/etc/systemd/system/commonstack-backup-check.timer").content
    assert "ExecStart=/usr/local/sbin/commonstack-backup check\n" in check
    assert f"READ_DATA={profile.backup.check_read_data}\n" in script.content and '--read-data-subset="$READ_DATA"' in script.content
    repository = scenario.file("/etc/commonstack/restic-repository")
    assert repository.content == profile.backup.repository + "\n" and repository.mode == "0600"
    assert scenario.file("/etc/commonstack/restic-password").mode == "0600"


@by_scenario(lambda s: "backup" in s.plan.layers)
def test_an_sftp_repository_is_reached_with_the_hosts_own_key_and_a_pinned_server_key(scenario):
    repository = parse_repository(scenario.profile.backup.repository)
    keys = [f for f in scenario.plan.files if f.path == "/etc/commonstack/backup-ssh-key"]
    if repository.kind != "sftp":
        assert not keys and "sftp.command" not in scenario.file("/usr/local/sbin/commonstack-backup").content
        return
    (key,) = keys
    assert key.mode == "0600" and key.content.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    redacted = plan_host(scenario.profile, scenario.host, {**secrets_for(scenario.profile), "backup_ssh_seed": "<secret:backup_ssh_seed>"},
                         scenario.plan.release)  # fmt: skip
    assert next(f for f in redacted.files if f.path == key.path).content == "<secret:backup_ssh_seed>\n", (
        "render shows no key made from a placeholder"
    )
    script = scenario.file("/usr/local/sbin/commonstack-backup").content
    assert "-o StrictHostKeyChecking=yes" in script and "-o UserKnownHostsFile=/etc/commonstack/backup-known_hosts" in script
    assert f"-p {repository.port} {repository.ssh_target} -s sftp" in script
