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

from commonstack.stacks.paths import (
    BACKUP_CONFIG_DIR,
    BACKUP_STATE,
    CADDY_DATA,
    COTURN_CONFIG,
    DISCOURSE_APP_YML,
    DISCOURSE_BACKUPS,
    DISCOURSE_DIR,
    NEXTCLOUD_CODE,
    NEXTCLOUD_DATA,
    NEXTCLOUD_OCC,
    RESTORE_STAGING,
    STATE_DIR,
    SYNAPSE_CONFIG_DIR,
    SYNAPSE_MEDIA,
    SYNAPSE_PYTHON,
    SYNAPSE_SIGNING_KEY,
    SYNAPSE_VENV,
)

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
    """How `commonstack upgrade` moves a layer to another release (commonstack/upgrades/ runs it).

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


@dataclass(frozen=True)
class Dump:
    """A database of the layer saved with `pg_dump -Fc` (consistent without stopping anything)."""

    database: str
    # Tables whose rows are left out (their definitions stay), as upstream advises.
    exclude_table_data: tuple[str, ...] = ()
    # Tables whose rows are counted into the snapshot's manifest: a restore (and the drill) must
    # find at least as many.
    counted: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerBackup:
    """What a layer's backup holds and how a restore puts it back (templates/backup renders the
    host's backup and restore scripts from these declarations).

    Shell commands run as root on the host, in the backup script's environment.
    """

    dumps: tuple[Dump, ...] = ()
    paths: tuple[str, ...] = ()  # saved, and put back by a restore (data the deploy cannot remake)
    configs: tuple[str, ...] = ()  # saved for the record; a restore keeps what the deploy rendered
    exclude: tuple[str, ...] = ()  # restic --exclude patterns: caches that rebuild themselves
    # Makes the data still for the few seconds it is read, and lets it go again; `resume` always
    # runs once `pause` did, whatever happens in between (Nextcloud's maintenance mode).
    pause: str | None = None
    resume: str | None = None
    # Writes the layer's own export into "$1", a folder that goes into the snapshot (Discourse's
    # `discourse backup`); `import_` puts it back from "$1" during a restore.
    export: str | None = None
    import_: str | None = None
    # Prints a JSON object of the layer's versions for the snapshot's manifest.
    version: str | None = None
    # Runs once the restored data is in place, before the layer's units start again.
    restored: str | None = None

    @property
    def saved(self) -> tuple[str, ...]:
        return self.paths + self.configs

    @property
    def restorable(self) -> bool:
        """Whether a restore puts anything of the layer back (else it was saved for the record)."""
        return bool(self.dumps or self.paths or self.import_)


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
    # "module:function": what its service must find when its package first starts it, added before
    # the packages' transaction; `deploy` gets what it returned as `first_start=` (None: the
    # package was installed).
    first_start: str | None = None
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
    # How `commonstack upgrade` moves it to another release (None: it has no releases of its own).
    upgrade: LayerUpgrade | None = None
    # What its backups hold (None: nothing of its own, e.g. Redis's cache).
    backup: LayerBackup | None = None

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
        # Debian's own updates, within the host's release.
        upgrade=LayerUpgrade(steps="debian_upgrade"),
    ),
    Layer(
        "postgres",
        "PostgreSQL from Debian, tuned by sizing, a database per service",
        packages=("postgresql-{postgresql}",),
        deploy="postgres:postgresql",
        first_start="postgres:first_start_settings",
        checks=("postgres",),
        units=("postgresql",),
        data=("/var/lib/postgresql",),
        sandboxed=("postgresql@{postgresql}-main",),  # postgresql.service only starts the clusters
        # Its databases are saved by the layers that own them (pg_dump); here only the version.
        backup=LayerBackup(
            version="printf '{\"version\": \"%s\"}' \"$(cd / && runuser -u postgres -- psql -XAtq -c 'SHOW server_version')\""
        ),
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
        data=(CADDY_DATA,),  # its certificates and ACME account
        sandboxed=("caddy",),
        # Certificates and the ACME account come back (no new issuance, no rate limit); its
        # local CA too, which the group's devices may trust.
        backup=LayerBackup(
            paths=(CADDY_DATA,),
            configs=("/etc/caddy",),
            # coturn keeps a copy of Caddy's certificate (layer coturn): it must follow the restored one.
            restored=(f"! systemctl cat coturn-certificate.service >/dev/null 2>&1 || "
                      "systemctl start coturn-certificate.service"),  # fmt: skip
        ),
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
        # A new virtualenv beside the old one; the database migrates when the new code starts.
        upgrade=LayerUpgrade(
            steps="synapse_upgrade",
            pins="synapse",
            profile_key="matrix.version",
            dumps=("synapse",),
            saved=(SYNAPSE_CONFIG_DIR,),
            running=SYNAPSE_VENV,
            code_mb=400,  # a virtualenv with Synapse and its dependencies: about 250 MB
            gate_seconds=30,  # its start returns once it is ready (Type=notify, after its migrations)
        ),
        # Synapse's own advice (docs: "Backups"): the database without the one-time keys' rows,
        # the signing key (the server's identity to every other server) and local media only
        # (remote media and URL previews are fetched again).
        backup=LayerBackup(
            dumps=(Dump("synapse", exclude_table_data=("e2e_one_time_keys_json",),
                        counted=("users", "rooms", "events", "local_media_repository")),),  # fmt: skip
            paths=(SYNAPSE_SIGNING_KEY, f"{SYNAPSE_MEDIA}/local_content", f"{SYNAPSE_MEDIA}/local_thumbnails"),
            configs=(SYNAPSE_CONFIG_DIR,),
            version=(
                f"printf '{{\"version\": \"%s\", \"schema\": %s}}' "
                f"\"$({SYNAPSE_PYTHON} -c 'import synapse; print(synapse.__version__)')\" "
                "\"$(cd / && runuser -u postgres -- psql -XAtq -d synapse -c 'SELECT version FROM schema_version')\""
            ),
        ),
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
        backup=LayerBackup(configs=(COTURN_CONFIG,)),
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
        # The new release unpacked beside the old one, then `occ upgrade` in maintenance mode.
        upgrade=LayerUpgrade(
            steps="nextcloud_upgrade",
            pins="nextcloud",
            profile_key="nextcloud.version",
            dumps=("nextcloud",),
            saved=(f"{NEXTCLOUD_CODE}/config",),
            running=NEXTCLOUD_CODE,
            code_mb=1024,  # the unpacked release (about 700 MB) and its archive while it is checked
            one_major_at_a_time=True,  # Nextcloud's admin manual: no major may be skipped
        ),
        # The admin manual's backup: config/, data/ and the database, in maintenance mode so that
        # the three agree. The code is the verified release, installed again by the deploy.
        backup=LayerBackup(
            dumps=(Dump("nextcloud"),),
            paths=(f"{NEXTCLOUD_CODE}/config", NEXTCLOUD_DATA),
            exclude=(f"{NEXTCLOUD_DATA}/appdata_*/preview",),  # thumbnails, made again on demand
            pause=f"{NEXTCLOUD_OCC} maintenance:mode --on",
            resume=f"{NEXTCLOUD_OCC} maintenance:mode --off",
            version=f"{NEXTCLOUD_OCC} status --output=json",
            # The saved config.php says maintenance (it was saved so); clients resync their files.
            restored=f"{NEXTCLOUD_OCC} maintenance:mode --off && {NEXTCLOUD_OCC} maintenance:data-fingerprint",
        ),
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
        # The launcher at its new commit, then `./launcher rebuild`; the forum's database lives in
        # the container, so Discourse's own backup (database and uploads) is what a rollback restores.
        upgrade=LayerUpgrade(
            steps="discourse_upgrade",
            pins="discourse_docker",
            profile_key="discourse.launcher.commit",
            saved=(f"{DISCOURSE_DIR}/containers",),
            running=DISCOURSE_DIR,
            code_mb=5 * 1024,  # the launcher's own check before a rebuild
            gate_seconds=600,  # the new container boots Discourse and migrates before it answers
        ),
        # Discourse's own archive (database and uploads), which its own restore reads.
        backup=LayerBackup(
            configs=(DISCOURSE_APP_YML,),
            export=(
                f"docker exec app discourse backup >&2 && "
                f"mv \"$(find {DISCOURSE_BACKUPS} -maxdepth 1 -name '*.tar.gz' -printf '%T@ %p\\n' "
                "| sort -n | tail -n 1 | cut -d' ' -f2-)\" \"$1\"/"
            ),
            import_=(
                f"cp \"$1\"/*.tar.gz {DISCOURSE_BACKUPS}/ && docker exec app discourse enable_restore && "
                "docker exec app discourse restore \"$(basename \"$(ls \"$1\"/*.tar.gz)\")\" && "
                "docker exec app discourse disable_restore"
            ),
            version=(
                "printf '{\"commit\": \"%s\", \"launcher\": \"%s\"}' "
                "\"$(docker exec app git -C /var/www/discourse rev-parse HEAD)\" "
                "\"$(git -C /var/discourse rev-parse HEAD)\""
            ),
        ),
    ),
    Layer(
        "backup",
        "restic backups of every layer's data to a repository off the host (profile: backup)",
        wanted=lambda profile, services: profile.backup.enabled,
        packages=("restic", "jq", "openssh-client"),
        deploy="backup:backup",
        preflight="backup:backup_preflight",
        checks=("backup",),
        secrets=("restic_password", "backup_ssh_seed"),
        units=("commonstack-backup.timer", "commonstack-backup-check.timer"),
        data=(BACKUP_STATE,),
        sandboxed=("commonstack-backup", "commonstack-backup-check"),
        # The kit's own records (which layers it deployed, the Matrix server name...) and this
        # layer's settings, for the record: a restore runs after a deploy that wrote them anew.
        backup=LayerBackup(
            configs=(STATE_DIR, BACKUP_CONFIG_DIR),
            exclude=(RESTORE_STAGING, f"{BACKUP_CONFIG_DIR}/restic-password",
                     f"{BACKUP_CONFIG_DIR}/backup-ssh-key"),  # fmt: skip
        ),
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


def saved_paths(layers: tuple[str, ...]) -> list[str]:
    """Every path the backups of these layers save, without those inside another (restic would
    otherwise meet them twice)."""
    paths = sorted({path for name in layers if (spec := layer(name).backup) for path in spec.saved})
    return [p for p in paths if not any(p.startswith(other.rstrip("/") + "/") for other in paths if other != p)]


def check_modules(layers: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The check modules of these layers (of all without), in layer order."""
    return tuple(module for item in LAYERS if layers is None or item.name in layers for module in item.checks)
