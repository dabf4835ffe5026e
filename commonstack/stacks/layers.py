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


# What enables a layer on a host other than a service: the profile, and the services on the host.
Wanted = Callable[["StackProfile", frozenset[str]], bool]
Ports = Callable[["StackProfile", "Host"], tuple[Port, ...]]


@dataclass(frozen=True)
class Layer:
    name: str
    summary: str  # what it is, for --help and the docs
    # What enables it: the profile service it runs (as StackProfile.services_on names them), else
    # `wanted`; with neither, it is on a host only when another layer there requires it.
    service: str | None = None
    wanted: Wanted | None = None
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
    # Its services, sandboxed by systemd's hardening options (a drop-in over Debian's unit, or the
    # kit's own unit): the checks ask `systemd-analyze security` to rate each OK ("{php}" as above).
    sandboxed: tuple[str, ...] = ()
    # The fail2ban jails that ban addresses guessing its logins (base runs fail2ban and writes them).
    jails: tuple[str, ...] = ()
    # Kernel settings (sysctl key, value) it wants, applied at deploy and at every boot.
    sysctl: tuple[tuple[str, str], ...] = ()

    @property
    def generated_secrets(self) -> tuple[str, ...]:
        return tuple(d.password_secret for d in self.databases) + self.secrets


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


# The kernel's network and process hardening every host gets: safe for every layer (none routes
# packets for others, or traces another process). Sources: the kernel's sysctl documentation,
# lynis's KRNL-6000 profile, Debian's hardening wiki.
KERNEL_HARDENING: tuple[tuple[str, str], ...] = (
    # Reverse-path filtering: drop packets from source addresses no route leads back to (spoofed).
    # An interface's own value counts where higher: systemd sets each to loose (2), which keeps a Pi
    # with both Wi-Fi and Ethernet working; "all" makes it strict wherever it is off.
    ("net.ipv4.conf.all.rp_filter", "1"),
    ("net.ipv4.conf.default.rp_filter", "1"),
    # No ICMP redirects in or out: nobody on the network rewrites the host's routes. The kernel
    # honours a redirect if "all" or the interface allows it: every interface ("*") is set.
    ("net.ipv4.conf.*.accept_redirects", "0"),
    ("net.ipv4.conf.*.secure_redirects", "0"),
    ("net.ipv4.conf.*.send_redirects", "0"),
    ("net.ipv6.conf.*.accept_redirects", "0"),
    # No source routing: a packet does not choose its own way through the host.
    ("net.ipv4.conf.*.accept_source_route", "0"),
    ("net.ipv6.conf.*.accept_source_route", "0"),
    # SYN floods: answer with cookies once the backlog is full, instead of dropping connections.
    ("net.ipv4.tcp_syncookies", "1"),
    # Packets with impossible addresses are logged; broadcast pings and bogus ICMP errors ignored.
    ("net.ipv4.conf.*.log_martians", "1"),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
    ("net.ipv4.icmp_ignore_bogus_error_responses", "1"),
    # Kernel addresses and the kernel log are root's: they help an exploit aim.
    ("kernel.kptr_restrict", "2"),
    ("kernel.dmesg_restrict", "1"),
    # Links, FIFOs and files in sticky world-writable folders (/tmp) cannot trick a root process.
    ("fs.protected_hardlinks", "1"),
    ("fs.protected_symlinks", "1"),
    ("fs.protected_fifos", "2"),
    ("fs.protected_regular", "2"),
    # No core dumps of setuid programs (their memory may hold secrets).
    ("fs.suid_dumpable", "0"),
    # A process may trace only its own children: a broken-into service cannot read another's memory.
    ("kernel.yama.ptrace_scope", "1"),
    # BPF for root only, its JIT hardened against spraying.
    ("kernel.unprivileged_bpf_disabled", "1"),
    ("net.core.bpf_jit_harden", "2"),
    # No magic SysRq keys: a server has no one at its keyboard.
    ("kernel.sysrq", "0"),
    # A user cannot make the kernel load a terminal line discipline (several had exploitable bugs).
    ("dev.tty.ldisc_autoload", "0"),
)

LAYERS: tuple[Layer, ...] = (
    Layer(
        "base",
        "the hardened base every host gets: security updates, time, swap, admin user, sshd, firewall",
        wanted=lambda profile, services: True,
        # needrestart restarts what uses a library an update replaced; fail2ban reads the journal
        # through python3-systemd (Debian 12 has no /var/log/auth.log).
        packages=("netbase", "ca-certificates", "sudo", "nftables", "unattended-upgrades", "systemd-timesyncd",
                  "curl", "needrestart", "fail2ban", "python3-systemd"),  # fmt: skip
        deploy="base:base",
        checks=("base", "host"),
        ports=_ssh,
        jails=("sshd",),
        sysctl=KERNEL_HARDENING,
    ),
    Layer(
        "postgres",
        "PostgreSQL from Debian, tuned by sizing, a database per service",
        packages=("postgresql-{postgresql}",),
        deploy="postgres:postgresql",
        checks=("postgres",),
        units=("postgresql",),
        data=("/var/lib/postgresql",),
        sandboxed=("postgresql@{postgresql}-main",),  # postgresql.service only starts the clusters
    ),
    Layer(
        "redis",
        "Redis from Debian on a unix socket, for Nextcloud's locking and cache",
        packages=("redis-server",),
        deploy="redis:redis",
        checks=("redis",),
        units=("redis-server",),
        data=("/var/lib/redis",),
        sandboxed=("redis-server",),  # Debian's unit is sandboxed already
    ),
    Layer(
        "caddy",
        "Caddy, the one reverse proxy, with certificates from ACME or its own CA",
        packages=("caddy",),
        deploy="caddy:caddy",
        checks=("caddy",),
        ports=_web,
        units=("caddy",),
        data=("/var/lib/caddy",),  # its certificates and ACME account
        sandboxed=("caddy",),
    ),
    Layer(
        "synapse",
        "Matrix: Synapse from PyPI in a virtualenv (profile: matrix)",
        service="matrix",
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
        sandboxed=("matrix-synapse",),
        jails=("commonstack-matrix",),
    ),
    Layer(
        "coturn",
        "TURN for Matrix calls: coturn from Debian (profile: matrix.turn)",
        service="turn",
        requires=("caddy",),  # its TLS certificate is a copy of Caddy's
        packages=("coturn",),
        deploy="coturn:coturn",
        checks=("coturn",),
        ports=_turn,
        secrets=("turn_shared_secret",),
        units=("coturn", "coturn-certificate.timer"),
        sandboxed=("coturn", "coturn-certificate"),
    ),
    Layer(
        "nextcloud",
        "files and calendars: Nextcloud from its signed tarball on PHP-FPM (profile: nextcloud)",
        service="nextcloud",
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
        sandboxed=("php{php}-fpm", "nextcloud-cron"),
        jails=("commonstack-nextcloud",),
    ),
    Layer(
        "docker",
        "the Docker engine that Discourse's launcher drives: Debian's docker.io",
        packages=("git", "apparmor"),  # docker.io itself: deploys/docker.py keeps an engine already there
        deploy="docker:docker_engine",
        checks=("docker",),
        units=("docker.socket", "docker"),  # the socket would start the daemon again on demand
        data=("/var/lib/docker",),
    ),
    Layer(
        "discourse",
        "the forum: Discourse through its official launcher (profile: discourse)",
        service="discourse",
        requires=("docker", "caddy"),
        deploy="discourse:discourse",
        preflight="discourse:discourse_preflight",
        checks=("discourse",),
        data=("/var/discourse",),  # app.yml, and the forum's database and uploads in shared/
        remove="discourse:discourse_stopped",
    ),
    Layer(
        "backup",
        "restic backups of every layer's data to a repository off the host (profile: backup)",
        wanted=lambda profile, services: profile.backup.enabled,
        packages=("restic",),
        secrets=("restic_password",),
        units=("commonstack-backup.timer",),
        sandboxed=("commonstack-backup",),
    ),
)

_BY_NAME = {layer.name: layer for layer in LAYERS}
LAYER_NAMES = tuple(_BY_NAME)


def layer(name: str) -> Layer:
    return _BY_NAME[name]


def layers_on(profile: StackProfile, host: Host) -> tuple[str, ...]:
    """The layers a host runs, in deploy order: those its services enable, and what they require."""
    services = profile.services_on(host)
    wanted = {
        item.name
        for item in LAYERS
        if (item.service in services if item.service else item.wanted is not None and item.wanted(profile, services))
    }
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
