"""The layer registry: one declaration per layer a host can run, which everything else reads.

A *layer* is one thing the kit installs and looks after on a host: the hardened base, a shared
service (PostgreSQL, Redis, Caddy, Docker) or a group's service (Synapse, coturn, Nextcloud,
Discourse, backups). Its declaration says what enables it and carries what the rest of the kit
needs to know of it; its own code lives in four places named after it:

    stacks/model.py             its profile keys (when the volunteer can set any)
    templates/NAME/             its config files, laid out like their paths on the host
    deploys/NAME.py             its pyinfra @deploy (and its preflight)
    checks/NAME.py              its testinfra health checks

The order of LAYERS is the order a host is converged in. Nothing here imports pydantic or
pyinfra, so `commonstack --help` can list the layers instantly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commonstack.stacks.model import Host, StackProfile


@dataclass(frozen=True)
class Port:
    """An inbound port (or range, "49160-49200") the host's firewall opens."""

    proto: str  # tcp | udp
    port: str
    why: str


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database with a role of the same name, created by the postgres layer."""

    name: str
    password_secret: str  # the role's password in secrets.yaml
    # Synapse requires C collation and UTF8 (its docs: "Set up database"); None: the cluster's default.
    collation: str | None = None


@dataclass(frozen=True)
class LayerUpgrade:
    """How `commonstack upgrade` moves a layer to another release (commonstack/upgrades.py runs it).

    One layer of one host at a time: a preflight that changes nothing; a pre-upgrade backup (the
    backup layer's, when the host has it) and always a local `pg_dump -Fc` of `dumps` and a copy
    of `saved`; the new code beside the old, switched over, migrated; a health gate (the layer's
    own checks, expecting the target release, with retries for slow starts); on a failed gate,
    a rollback to the old code with the dumped databases and saved config, gated again. Each step
    is recorded on the host, so an interrupted upgrade is resumed or rolled back by the next run.
    """

    steps: str  # module in commonstack.deploys: its installed_version() fact and its upgrade steps
    pins: str | None = None  # its entry in versions.yaml (None: Debian's own updates)
    profile_key: str | None = None  # the profile key that may hold it at another known release
    dumps: tuple[str, ...] = ()  # its PostgreSQL databases: dumped before, restored by a rollback
    saved: tuple[str, ...] = ()  # config the upgrade may change: copied before, put back by a rollback
    running: str | None = None  # the code that runs (a folder, or a link to one); new code goes beside it
    code_mb: int = 0  # free space the new code needs beside the old
    one_major_at_a_time: bool = False  # no major may be skipped, and each is left from its newest patch
    gate_seconds: int = 60  # how long its health gate retries before the upgrade counts as failed


# What enables a layer on a host: the profile, and the services the profile places on the host.
Wanted = Callable[["StackProfile", frozenset[str]], bool]
Ports = Callable[["StackProfile", "Host"], tuple[Port, ...]]


@dataclass(frozen=True)
class Layer:
    name: str
    summary: str  # what it is, for --help and the docs
    wanted: Wanted | None  # None: only when another layer on the host requires it
    requires: tuple[str, ...] = ()  # shared layers it needs on the same host
    # Debian packages, installed for every layer of a host in one apt transaction. "{php}" and
    # "{postgresql}" stand for the versions of the host's Debian release (versions.yaml).
    packages: tuple[str, ...] = ()
    deploy: str | None = None  # "module:function" in commonstack.deploys; None: not deployed yet
    preflight: str | None = None  # "module:function": refuses the host before any change
    checks: tuple[str, ...] = ()  # its check modules (commonstack/checks/NAME.py)
    ports: Ports | None = None
    secrets: tuple[str, ...] = ()  # generated into secrets.yaml (database passwords come with databases)
    databases: tuple[Database, ...] = ()
    # What runs: stopped and disabled when the profile turns the layer off ("{php}" as above).
    units: tuple[str, ...] = ()
    # Where its data lives: kept when the layer is turned off, deleted only by `deploy --purge`.
    data: tuple[str, ...] = ()
    # "module:function": how it is turned off when stopping its units is not enough.
    remove: str | None = None
    # How `commonstack upgrade` moves it to another release (None: it has no releases of its own).
    upgrade: LayerUpgrade | None = None

    @property
    def generated_secrets(self) -> tuple[str, ...]:
        return tuple(d.password_secret for d in self.databases) + self.secrets


def _service(name: str) -> Wanted:
    return lambda profile, services: name in services


def _ssh(profile: StackProfile, host: Host) -> tuple[Port, ...]:
    return (Port("tcp", str(host.port), "SSH"),)


def _web(profile: StackProfile, host: Host) -> tuple[Port, ...]:
    return (
        Port("tcp", "80", "HTTP (ACME challenges, redirect to HTTPS)"),
        Port("tcp", "443", "HTTPS"),
        Port("udp", "443", "HTTP/3"),
    )


def _turn(profile: StackProfile, host: Host) -> tuple[Port, ...]:
    turn = profile.matrix.turn
    return (
        Port("tcp", "3478", "TURN"),
        Port("udp", "3478", "TURN"),
        Port("tcp", "5349", "TURN over TLS"),
        Port("udp", "5349", "TURN over DTLS"),
        Port("udp", f"{turn.min_port}-{turn.max_port}", "TURN relays"),
    )


LAYERS: tuple[Layer, ...] = (
    Layer(
        "base",
        "the hardened base every host gets: security updates, time, swap, admin user, sshd, firewall",
        wanted=lambda profile, services: True,
        packages=("netbase", "ca-certificates", "sudo", "nftables", "unattended-upgrades", "systemd-timesyncd",
                  "curl"),  # fmt: skip
        deploy="base:base",
        checks=("base", "host"),
        ports=_ssh,
        # Debian's own updates, within the host's release.
        upgrade=LayerUpgrade(steps="debian_upgrade"),
    ),
    Layer(
        "postgres",
        "PostgreSQL from Debian, tuned by sizing, a database per service",
        wanted=None,
        packages=("postgresql-{postgresql}",),
        deploy="postgres:postgresql",
        checks=("postgres",),
        units=("postgresql",),
        data=("/var/lib/postgresql",),
    ),
    Layer(
        "redis",
        "Redis from Debian on a unix socket, for Nextcloud's locking and cache",
        wanted=None,
        packages=("redis-server",),
        deploy="redis:redis",
        checks=("redis",),
        units=("redis-server",),
        data=("/var/lib/redis",),
    ),
    Layer(
        "caddy",
        "Caddy, the one reverse proxy, with certificates from ACME or its own CA",
        wanted=None,
        packages=("caddy",),
        deploy="caddy:caddy",
        checks=("caddy",),
        ports=_web,
        units=("caddy",),
        data=("/var/lib/caddy",),  # its certificates and ACME account
    ),
    Layer(
        "synapse",
        "Matrix: Synapse from PyPI in a virtualenv (profile: matrix)",
        wanted=_service("matrix"),
        requires=("postgres", "caddy"),
        # Upstream's prerequisites for a pip install with PostgreSQL: a venv, and what building
        # psycopg2 from source needs (PyPI has no Linux wheel of it). jemalloc: Synapse's docs.
        packages=("python3-venv", "python3-dev", "gcc", "libc6-dev", "libpq-dev", "libjemalloc2"),
        deploy="synapse:synapse",
        preflight="synapse:synapse_preflight",
        checks=("synapse",),
        secrets=("synapse_registration_shared_secret", "synapse_macaroon_secret_key", "synapse_form_secret",
                 "matrix_admin_password"),  # fmt: skip
        databases=(Database("synapse", "postgres_synapse_password", collation="C"),),
        units=("matrix-synapse",),
        data=("/var/lib/matrix-synapse", "/etc/matrix-synapse"),  # media, and the signing key
        # A new virtualenv beside the old one; the database migrates when the new code starts.
        upgrade=LayerUpgrade(
            steps="synapse_upgrade",
            pins="synapse",
            profile_key="matrix.version",
            dumps=("synapse",),
            saved=("/etc/matrix-synapse",),
            running="/opt/synapse/venv",
            code_mb=400,  # a virtualenv with Synapse and its dependencies: about 250 MB
            gate_seconds=30,  # its start returns once it is ready (Type=notify, after its migrations)
        ),
    ),
    Layer(
        "coturn",
        "TURN for Matrix calls: coturn from Debian (profile: matrix.turn)",
        wanted=_service("turn"),
        requires=("caddy",),  # its TLS certificate is a copy of Caddy's
        packages=("coturn",),
        deploy="coturn:coturn",
        checks=("coturn",),
        ports=_turn,
        secrets=("turn_shared_secret",),
        units=("coturn", "coturn-certificate.timer"),
    ),
    Layer(
        "nextcloud",
        "files and calendars: Nextcloud from its signed tarball on PHP-FPM (profile: nextcloud)",
        wanted=_service("nextcloud"),
        requires=("postgres", "redis", "caddy"),
        # The admin manual's PHP modules (installation: prerequisites) as Debian packages (php-common
        # brings ctype, fileinfo, iconv, posix, session, sodium, exif...; php-xml: dom, SimpleXML,
        # XMLReader, XMLWriter); Imagick's SVG coders (setup checks ask for them); curl, gpgv and
        # bzip2 fetch, verify and unpack the release.
        packages=tuple(f"php{{php}}-{module}" for module in (
            "fpm", "cli", "common", "opcache", "gd", "mbstring", "xml", "zip", "curl", "intl", "bcmath", "gmp",
            "bz2", "pgsql", "apcu", "redis", "imagick",
        )) + ("{imagemagick_extra}", "curl", "gpgv", "bzip2"),  # fmt: skip
        deploy="nextcloud:nextcloud",
        preflight="nextcloud:nextcloud_preflight",
        checks=("nextcloud",),
        secrets=("nextcloud_admin_password",),
        databases=(Database("nextcloud", "postgres_nextcloud_password"),),
        units=("php{php}-fpm", "nextcloud-cron.timer"),
        data=("/var/www/nextcloud", "/var/lib/nextcloud"),  # its code and config, and the files
        # The new release unpacked beside the old one, then `occ upgrade` in maintenance mode.
        upgrade=LayerUpgrade(
            steps="nextcloud_upgrade",
            pins="nextcloud",
            profile_key="nextcloud.version",
            dumps=("nextcloud",),
            saved=("/var/www/nextcloud/config",),
            running="/var/www/nextcloud",
            code_mb=1024,  # the unpacked release (about 700 MB) and its archive while it is checked
            one_major_at_a_time=True,  # Nextcloud's admin manual: no major may be skipped
        ),
    ),
    Layer(
        "docker",
        "the Docker engine that Discourse's launcher drives: Debian's docker.io",
        wanted=None,
        packages=("git", "apparmor"),  # docker.io itself: deploys/docker.py keeps an engine already there
        deploy="docker:docker_engine",
        checks=("docker",),
        units=("docker.socket", "docker"),  # the socket would start the daemon again on demand
        data=("/var/lib/docker",),
    ),
    Layer(
        "discourse",
        "the forum: Discourse through its official launcher (profile: discourse)",
        wanted=_service("discourse"),
        requires=("docker", "caddy"),
        deploy="discourse:discourse",
        preflight="discourse:discourse_preflight",
        checks=("discourse",),
        data=("/var/discourse",),  # app.yml, and the forum's database and uploads in shared/
        remove="discourse:discourse_stopped",
        # The launcher at its new commit, then `./launcher rebuild`; the forum's database lives in
        # the container, so Discourse's own backup (database and uploads) is what a rollback restores.
        upgrade=LayerUpgrade(
            steps="discourse_upgrade",
            pins="discourse_docker",
            profile_key="discourse.launcher.commit",
            saved=("/var/discourse/containers",),
            running="/var/discourse",
            code_mb=5 * 1024,  # the launcher's own check before a rebuild
            gate_seconds=600,  # the new container boots Discourse and migrates before it answers
        ),
    ),
    Layer(
        "backup",
        "restic backups of every layer's data to a repository off the host (profile: backup)",
        wanted=lambda profile, services: profile.backup.enabled,
        packages=("restic",),
        secrets=("restic_password",),
        units=("commonstack-backup.timer",),
    ),
)

_BY_NAME = {layer.name: layer for layer in LAYERS}
LAYER_NAMES = tuple(_BY_NAME)


def layer(name: str) -> Layer:
    return _BY_NAME[name]


def layers_on(profile: StackProfile, host: Host) -> tuple[str, ...]:
    """The layers a host runs, in deploy order: those its services enable, and what they require."""
    services = profile.services_on(host)
    wanted = {item.name for item in LAYERS if item.wanted is not None and item.wanted(profile, services)}
    pending = list(wanted)
    while pending:
        for required in layer(pending.pop()).requires:
            if required not in wanted:
                wanted.add(required)
                pending.append(required)
    return tuple(name for name in LAYER_NAMES if name in wanted)


def firewall_ports(profile: StackProfile, host: Host) -> list[Port]:
    """Inbound ports the host must open: exactly what its layers need."""
    return [port for name in layers_on(profile, host) if (ports := layer(name).ports) for port in ports(profile, host)]


def databases_on(profile: StackProfile, host: Host) -> list[Database]:
    return [database for name in layers_on(profile, host) for database in layer(name).databases]


def generated_secrets(profile: StackProfile) -> list[str]:
    """Names of the secrets the kit generates for the layers of every host of the profile."""
    names = {secret for host in profile.hosts for name in layers_on(profile, host)
             for secret in layer(name).generated_secrets}  # fmt: skip
    return [secret for item in LAYERS for secret in item.generated_secrets if secret in names]


def check_modules(layers: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The check modules of these layers (of all without), in layer order."""
    return tuple(module for item in LAYERS if layers is None or item.name in layers for module in item.checks)
