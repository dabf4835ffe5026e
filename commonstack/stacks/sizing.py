"""Sizing rules: from a host's facts and the services placed on it, the tuning.

Pure functions, no I/O.  ``compute_sizing`` either refuses the host
(``HostTooSmall`` / ``UnsupportedArchitecture``) or returns a ``Sizing`` whose
every field is used by a config template.

How memory is shared out
------------------------
1. Fixed reserves come off the top: the OS, Caddy, coturn (with ``turn``) and
   the Docker daemon (with ``discourse``, which runs from discourse_docker).
2. The rest (the *pool*) is split between Discourse and the "host stack"
   (shared PostgreSQL + Redis + Nextcloud's PHP-FPM + Synapse) in proportion to
   each service's weight in the minimum-RAM table (nextcloud 1 GB, matrix 1 GB,
   discourse 1 GB alone / 2 GB when it shares the host).
3. Redis takes a small slice of the host-stack pool, PostgreSQL a third of the
   remainder, and the apps (PHP-FPM, Synapse) share the rest equally.
4. Rules written upstream for a *dedicated* host (discourse-setup, the Synapse
   cache-factor tiers) are applied to the service's *equivalent host*: host RAM
   (and CPUs) times the service's weight share.  On a host of its own a service
   gets exactly upstream's numbers; on a shared host it gets the numbers of the
   dedicated host its share would buy.
5. Every tuning value is then derived from its component's budget, and
   ``memory_footprint_mb`` models what the values commit, so that the modelled
   footprints of a computed ``Sizing`` always sum below the host's RAM
   (overrides are the operator's call and are not held to this).

Units: MB means MiB, as in /proc/meminfo MemTotal / 1024 (``free -m``).

Services not enabled get neutral values (0 for sizes, counts and the cache
factor), so templates can test a field for 0, and the shared PostgreSQL/Redis
fields are 0 when neither nextcloud nor matrix is on the host (turn needs no
database, and Discourse brings its own PostgreSQL and Redis in its container).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Mapping

__all__ = [
    "SERVICES",
    "HostFacts",
    "Sizing",
    "HostTooSmall",
    "UnsupportedArchitecture",
    "debian_arch",
    "fits",
    "minimum_memory_mb",
    "compute_sizing",
    "memory_footprint_mb",
    "size_class_gb",
]

SERVICES = ("nextcloud", "matrix", "turn", "discourse")  # postgres/redis/caddy are implied by these

# --------------------------------------------------------------------------
# Model constants (MB).  Estimates of resident memory on Debian 12/13; they are
# the model the property test checks against, so change them with the tests.
# --------------------------------------------------------------------------
OS_RESERVE_MB = 192  # kernel slab, systemd, journald, sshd, unattended-upgrades: ~120-180 MB idle on Debian, plus headroom
CADDY_MB = 48  # Caddy's idle RSS is ~30-50 MB (Go runtime + TLS cache); it fronts every service
COTURN_MB = 32  # coturn is mostly idle sockets; relays cost bandwidth, not RAM
DOCKER_MB = 64  # dockerd + containerd (~60 MB) run only because discourse_docker needs them
REDIS_OVERHEAD_MB = 8  # redis-server's own RSS beyond maxmemory
PG_BASE_MB = 48  # postmaster + checkpointer/walwriter/autovacuum launcher, excluding shared_buffers
PG_PER_CONNECTION_MB = 4  # private RSS of an idle backend (catalog caches); work_mem is transient and not counted
PHP_CHILD_MB = 64  # average private RSS of a Nextcloud php-fpm child with OPcache shared (the admin manual sizes pm.max_children by average process size)
SYNAPSE_BASE_MB = 192  # a small single-process Synapse (Python + Twisted + event cache) before the scalable caches
SYNAPSE_MB_PER_CACHE_FACTOR = 256  # what caches.global_factor = 1.0 adds on a small homeserver
DISCOURSE_BASE_MB = 320  # hot set of the container: unicorn master, sidekiq (forked), nginx, redis, postgres processes
DISCOURSE_WORKER_MB = 128  # hot set of one unicorn worker forked from the preloaded master (copy-on-write)
# The Discourse figures are the least certain of the model: at 1 GB its cold pages live in the 2 GB
# swap upstream requires ("1 GB with swap"); measure on a real small forum before trusting them further.

# Sold as "1 GB", a VPS reports ~960 MB in MemTotal (the kernel and firmware keep
# the rest), a 4 GB Raspberry Pi ~3.8 GB (GPU/CMA reserve): accept a host whose
# MemTotal is within 10% below the nominal size.  (discourse-setup makes the
# same kind of exception: it counts 990-999 MB (SI) as 1 GB.)
MEMTOTAL_SLACK_PERCENT = 10

# Minimum-RAM weights (MB) per service; also the weights of the pool split.
_NEXTCLOUD_MIN_MB = 1024  # Nextcloud alone: 1 GB ("personal"/Pi preset); Nextcloud needs a 512 MB memory_limit per request
_MATRIX_MIN_MB = 1024  # Synapse alone: the "chat" preset fits a 1 GB VPS at the default cache factor 0.5
_DISCOURSE_ALONE_MIN_MB = 1024  # Discourse upstream: 1 GB minimum *with swap*, 2 GB recommended (docs/INSTALL-cloud.md)
_DISCOURSE_SHARED_MIN_MB = 2048  # sharing a host, Discourse gets upstream's recommended 2 GB: it must not lean on swap next to others
_BASE_MIN_MB = 512  # only coturn (TURN for a homeserver elsewhere), or nothing yet: the OS and Caddy fit in 512 MB

# Hosts people actually buy, for the "what fits" hint.
_VPS_SIZES_GB = (1, 2, 4, 8, 16, 32, 64, 128)
_PI_MODELS = ((4, (1, 2, 4, 8)), (5, (2, 4, 8, 16)))  # Raspberry Pi 4 and 5 RAM options

# Discourse's Docker images (discourse/base) are published for amd64 and arm64 only.
_DISCOURSE_ARCHES = frozenset({"amd64", "arm64"})
# `uname -m` names -> Debian's architecture names. ARMv6 (Raspberry Pi 1 and Zero) is armel:
# Debian's armhf needs ARMv7.
_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armv7l": "armhf",
    "armv7": "armhf",
    "armv6l": "armel",
    "i686": "i386",
    "i586": "i386",
    "x86": "i386",
}

# Caps for a community-group-sized deployment.
_PHP_MAX_CHILDREN_CAP = 64  # beyond this a group's instance is CPU-bound, not short of workers; override if needed
_PG_SHARED_BUFFERS_CAP_MB = 4096  # same cap discourse-setup applies to db_shared_buffers; a group's DB is far smaller
_PG_MAINTENANCE_WORK_MEM_RANGE = (16, 1024)
_PG_WORK_MEM_RANGE = (2, 16)  # PostgreSQL's default is 4 MB; keep it small on small hosts
_REDIS_RANGE = (32, 256)
_SYNAPSE_FACTOR_RANGE = (0.5, 2.0)  # 0.5 is Synapse's default (_DEFAULT_FACTOR_SIZE); 2.0 is ample for a group
_DISCOURSE_WORKERS_CAP = 8  # discourse-setup caps UNICORN_WORKERS at 8


@dataclass(frozen=True)
class HostFacts:
    memory_mb: int  # MemTotal in MiB
    cpus: int
    arch: str  # "amd64" | "arm64" | "armhf" ... (uname -m spellings are accepted too)

    def __post_init__(self) -> None:
        if isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, int) or self.memory_mb <= 0:
            raise ValueError(f"memory_mb must be a positive integer (MemTotal in MB), got {self.memory_mb!r}")
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, int) or self.cpus <= 0:
            raise ValueError(f"cpus must be a positive integer, got {self.cpus!r}")
        if not isinstance(self.arch, str) or not self.arch.strip():
            raise ValueError(f"arch must be a non-empty string such as 'amd64' or 'arm64', got {self.arch!r}")


@dataclass(frozen=True)
class Sizing:  # every field used by a config template
    postgres_shared_buffers_mb: int
    postgres_effective_cache_size_mb: int
    postgres_work_mem_mb: int
    postgres_maintenance_work_mem_mb: int
    postgres_max_connections: int
    redis_maxmemory_mb: int
    php_fpm_max_children: int
    php_fpm_start_servers: int
    php_fpm_min_spare: int
    php_fpm_max_spare: int
    php_memory_limit_mb: int
    opcache_memory_mb: int
    synapse_cache_factor: float
    discourse_unicorn_workers: int
    discourse_db_shared_buffers_mb: int
    swap_mb: int


_FIELDS = tuple(f.name for f in dataclasses.fields(Sizing))
_FLOAT_FIELDS = frozenset({"synapse_cache_factor"})


class HostTooSmall(ValueError):
    """The host's RAM cannot carry the services placed on it."""

    def __init__(self, reason: str, needed_mb: int, memory_mb: int, hint: str) -> None:
        self.reason = reason  # what does not fit, e.g. "nextcloud + matrix + turn need at least 2048 MB of RAM"
        self.needed_mb = needed_mb  # nominal minimum (minimum_memory_mb); MemTotal may be up to 10% below it
        self.memory_mb = memory_mb
        self.hint = hint  # the smallest hosts that fit
        super().__init__(f"{reason}; this host has {memory_mb} MB ({hint})")


class UnsupportedArchitecture(ValueError):
    """A service cannot run on the host's CPU architecture at all."""

    def __init__(self, service: str, arch: str, message: str) -> None:
        self.service = service
        self.arch = arch
        super().__init__(message)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def debian_arch(arch: str) -> str:
    """Debian's name of an architecture given as `uname -m` prints it (or already Debian's)."""
    a = arch.strip().lower()
    return _ARCH_ALIASES.get(a, a)


def _normalize_services(services: Iterable[str]) -> frozenset[str]:
    if isinstance(services, str):
        raise ValueError(f"services must be a set of names, not the string {services!r}")
    svc = frozenset(services)
    unknown = sorted(svc - set(SERVICES))
    if unknown:
        implied = [u for u in unknown if u in ("postgres", "postgresql", "redis", "caddy")]
        extra = " (postgres, redis and caddy are implied by the services, do not list them)" if implied else ""
        raise ValueError(
            f"unknown service(s) {', '.join(repr(u) for u in unknown)}{extra}; valid services: {', '.join(SERVICES)}"
        )
    return svc


def _describe(services: frozenset[str]) -> str:
    return " + ".join(s for s in SERVICES if s in services) or "caddy"


def fits(memory_mb: int | Fraction, nominal_mb: int) -> bool:
    """Whether a host reporting `memory_mb` (MemTotal) counts as a host of `nominal_mb`: it may
    report up to MEMTOTAL_SLACK_PERCENT less than it was sold as."""
    return memory_mb * 100 >= nominal_mb * (100 - MEMTOTAL_SLACK_PERCENT)


def size_class_gb(memory_mb: int | Fraction) -> int:
    """The whole-GB size a host with this MemTotal was sold as.

    Rounds up to the next whole GB when within the 10% MemTotal slack of it
    (960 MB -> 1, 1950 -> 2, 3796 (a 4 GB Pi) -> 4), otherwise down (4500 -> 4).
    """
    up = math.ceil(Fraction(memory_mb) / 1024)
    if up > 0 and fits(Fraction(memory_mb), up * 1024):
        return up
    return math.floor(Fraction(memory_mb) / 1024)


def _floor_to(value: int | float | Fraction, step: int) -> int:
    return int(value // step) * step


def _clamp(value, lo, hi):
    return max(lo, min(hi, value))


def _weights(services: frozenset[str]) -> dict[str, int]:
    w: dict[str, int] = {}
    if "nextcloud" in services:
        w["nextcloud"] = _NEXTCLOUD_MIN_MB
    if "matrix" in services:
        w["matrix"] = _MATRIX_MIN_MB
    if "discourse" in services:
        w["discourse"] = _DISCOURSE_SHARED_MIN_MB if w else _DISCOURSE_ALONE_MIN_MB
    return w


def _host_hint(needed_mb: int) -> str:
    gb = math.ceil(needed_mb / 1024)
    vps = next((s for s in _VPS_SIZES_GB if s >= gb), None)
    # For a Pi, suggest the next size *above* the need: its firmware keeps GPU/CMA memory, so the
    # same nominal size lands at the edge of the slack, and an SD card is no place to swap to.
    pi = None
    for model, sizes in _PI_MODELS:
        size = next((s for s in sizes if s > gb), None)
        if size is not None:
            pi = (model, size)
            break
    parts = []
    if vps is not None:
        parts.append(f"a {vps} GB VPS")
    if pi is not None:
        parts.append(f"a Raspberry Pi {pi[0]} with {pi[1]} GB")
    if not parts:
        return f"a host with at least {gb} GB fits"
    return " or ".join(parts) + " fits"


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def minimum_memory_mb(services: frozenset[str], arch: str) -> int:
    """Nominal RAM (MB) the services need on one host; MemTotal may be 10% below it.

    Raises ``UnsupportedArchitecture`` when a service cannot run on ``arch`` at all.
    """
    svc = _normalize_services(services)
    norm = debian_arch(arch)
    if "discourse" in svc and norm not in _DISCOURSE_ARCHES:
        # discourse_docker's images (discourse/base) are built for amd64 and arm64 only.
        raise UnsupportedArchitecture(
            "discourse",
            arch,
            f"discourse cannot run on {arch}: Discourse's Docker images are published for amd64 and arm64 only; "
            "install a 64-bit OS (a Raspberry Pi 4 or 5 runs arm64 Raspberry Pi OS or Debian) "
            "or place discourse on another host",
        )
    w = _weights(svc)
    if not w:  # turn alone, or no service (yet)
        return _BASE_MIN_MB
    return sum(w.values())  # turn adds no minimum: coturn's ~30 MB is covered by the slack in each tier


def memory_footprint_mb(sizing: Sizing, services: frozenset[str]) -> dict[str, int]:
    """Modelled resident memory (MB) each component commits with these settings.

    Swap and PostgreSQL's effective_cache_size (a planner hint) are not memory
    commitments and are not counted; work_mem is transient (see compute_sizing).
    """
    svc = _normalize_services(services)
    fp: dict[str, int] = {"os": OS_RESERVE_MB, "caddy": CADDY_MB}
    if "turn" in svc:
        fp["coturn"] = COTURN_MB
    if "discourse" in svc:
        fp["docker"] = DOCKER_MB
        fp["discourse"] = (
            DISCOURSE_BASE_MB
            + sizing.discourse_unicorn_workers * DISCOURSE_WORKER_MB
            + sizing.discourse_db_shared_buffers_mb
        )
    if "nextcloud" in svc or "matrix" in svc:
        fp["postgres"] = (
            PG_BASE_MB
            + sizing.postgres_shared_buffers_mb
            + sizing.postgres_max_connections * PG_PER_CONNECTION_MB
            + sizing.postgres_maintenance_work_mem_mb
        )
        fp["redis"] = sizing.redis_maxmemory_mb + REDIS_OVERHEAD_MB
    if "nextcloud" in svc:
        fp["php_fpm"] = sizing.php_fpm_max_children * PHP_CHILD_MB + sizing.opcache_memory_mb
    if "matrix" in svc:
        fp["synapse"] = SYNAPSE_BASE_MB + math.ceil(sizing.synapse_cache_factor * SYNAPSE_MB_PER_CACHE_FACTOR)
    return fp


def compute_sizing(
    facts: HostFacts,
    services: frozenset[str],
    overrides: Mapping[str, int | float] | None = None,
) -> Sizing:
    """The tuning for ``services`` on this host, or a refusal.

    ``overrides`` maps any ``Sizing`` field name to a value that replaces the
    computed one; values derived from an overridden field follow it (e.g.
    overriding ``php_fpm_max_children`` re-derives the spare servers and
    ``postgres_max_connections`` unless those are overridden too).

    The steps follow the module docstring: the reserves and the pool, Discourse's
    share, then Redis and the budgets of the host stack, PHP-FPM, Synapse and
    PostgreSQL within them, and swap. A service that is not on the host keeps
    the neutral 0 of its fields.
    """
    svc = _normalize_services(services)
    ov = _check_overrides(overrides)
    _refuse_too_small(facts, svc)
    shares = _share_out(facts, svc)

    values: dict[str, int | float] = {name: 0.0 if name in _FLOAT_FIELDS else 0 for name in _FIELDS}
    if "discourse" in svc:
        values.update(_discourse(shares, ov))
    if "nextcloud" in svc or "matrix" in svc:
        stack = _host_stack_budgets(shares)
        values["redis_maxmemory_mb"] = stack.redis_mb
        if "nextcloud" in svc:
            values.update(_php_fpm(shares, stack.app_mb, ov))
        if "matrix" in svc:
            values["synapse_cache_factor"] = _synapse_cache_factor(shares, stack.app_mb, ov)
        values.update(_postgres(svc, stack.postgres_mb, int(values["php_fpm_max_children"]), ov))
    values["swap_mb"] = _swap_mb(shares)
    values.update(ov)  # an override stands whether or not its service is on the host

    sizing = Sizing(**values)
    if "nextcloud" in svc:
        _check_php_fpm(sizing)
    return sizing


# --------------------------------------------------------------------------
# the steps of compute_sizing
# --------------------------------------------------------------------------


def _refuse_too_small(facts: HostFacts, svc: frozenset[str]) -> None:
    """HostTooSmall unless the host's MemTotal fits the services' minimum (10% slack allowed)."""
    needed = minimum_memory_mb(svc, facts.arch)  # raises UnsupportedArchitecture first
    if not fits(facts.memory_mb, needed):
        need_word = "needs" if len(svc) <= 1 else "need"
        reason = f"{_describe(svc)} {need_word} at least {needed} MB of RAM"
        if "discourse" in svc and needed == _DISCOURSE_ALONE_MIN_MB:
            reason += " (with 2 GB of swap; Discourse recommends 2 GB)"
        raise HostTooSmall(reason, needed, facts.memory_mb, _host_hint(needed))


@dataclass(frozen=True)
class _Shares:
    """How the host's RAM is shared out before any service is tuned."""

    facts: HostFacts
    weights: dict[str, int]  # minimum-RAM weight of each service with one (_weights)
    discourse_mb: int  # Discourse's budget: its weight's share of the pool (0 without it)
    stack_mb: int  # the rest of the pool: PostgreSQL, Redis, PHP-FPM and Synapse

    @property
    def size_class_gb(self) -> int:
        return size_class_gb(self.facts.memory_mb)

    def equivalent_mb(self, service: str) -> Fraction:
        """The dedicated host this service's share buys (step 4): host RAM times its weight share."""
        return Fraction(self.facts.memory_mb * self.weights[service], sum(self.weights.values()))

    def equivalent_cpus(self, service: str) -> int:
        return max(1, self.facts.cpus * self.weights[service] // sum(self.weights.values()))


def _share_out(facts: HostFacts, svc: frozenset[str]) -> _Shares:
    # 1. The fixed reserves come off the top; 2. the rest, the pool, is split between Discourse
    # and the host stack by their minimum-RAM weights (a weight is what the service needs alone).
    fixed = OS_RESERVE_MB + CADDY_MB
    fixed += (COTURN_MB if "turn" in svc else 0) + (DOCKER_MB if "discourse" in svc else 0)
    pool = facts.memory_mb - fixed
    weights = _weights(svc)
    discourse_mb = pool * weights["discourse"] // sum(weights.values()) if "discourse" in svc else 0
    return _Shares(facts, weights, discourse_mb, pool - discourse_mb)


def _discourse(shares: _Shares, ov: Mapping[str, int | float]) -> dict[str, int]:
    # discourse_docker `discourse-setup` scale_ram_and_cpu(), applied to the equivalent host
    # (avail_gb = its whole GB, avail_cores = its share of the CPUs):
    #   db_shared_buffers = 128 MB at 1 GB, 256 MB at 2 GB, else 256 MB * GB, max 4096 MB;
    #   UNICORN_WORKERS   = 2 * GB when GB <= 2, else 2 * cores, max 8.
    d_gb = max(1, size_class_gb(shares.equivalent_mb("discourse")))
    d_cores = shares.equivalent_cpus("discourse")
    if d_gb == 1:
        upstream_sb = 128
    elif d_gb == 2:
        upstream_sb = 256
    else:
        upstream_sb = 256 * d_gb
    db_shared_buffers = ov.get("discourse_db_shared_buffers_mb", min(upstream_sb, 4096))
    upstream_workers = min(2 * d_gb if d_gb <= 2 else 2 * d_cores, _DISCOURSE_WORKERS_CAP)
    # ...but only as many workers as fit strictly inside Discourse's budget (a 1 GB VPS reporting
    # 960 MB gets 1, not 2).
    room = (shares.discourse_mb - 1 - DISCOURSE_BASE_MB - db_shared_buffers) // DISCOURSE_WORKER_MB
    return {
        "discourse_db_shared_buffers_mb": db_shared_buffers,
        "discourse_unicorn_workers": ov.get("discourse_unicorn_workers", max(1, min(upstream_workers, room))),
    }


@dataclass(frozen=True)
class _HostStack:
    """The stack pool shared out between Redis, PostgreSQL and the apps (step 3)."""

    redis_mb: int
    postgres_mb: int  # PostgreSQL's budget: its shared_buffers and the page cache it leans on
    app_mb: int  # each app's budget (PHP-FPM, Synapse)


def _host_stack_budgets(shares: _Shares) -> _HostStack:
    # 3. Redis holds Nextcloud's file locks and memcache (and Synapse's replication/cache when
    # used): a few dozen MB is plenty for a group; 1/16 of the stack pool, 32..256 MB.
    redis_mb = _clamp(_floor_to(shares.stack_mb // 16, 16), *_REDIS_RANGE)
    rest = shares.stack_mb - redis_mb - REDIS_OVERHEAD_MB
    # PostgreSQL's budget is a third of the rest; the apps on the host share the remainder equally.
    postgres_mb = rest // 3
    apps = len({"nextcloud", "matrix"} & shares.weights.keys())
    return _HostStack(redis_mb, postgres_mb, (rest - postgres_mb) // apps)


def _php_fpm(shares: _Shares, app_mb: int, ov: Mapping[str, int | float]) -> dict[str, int]:
    # OPcache 128 MB is Nextcloud's recommended opcache.memory_consumption (also PHP's default);
    # 64 MB on a 1 GB host, where every MB counts.
    opcache = ov.get("opcache_memory_mb", 64 if shares.size_class_gb <= 1 else 128)
    # Nextcloud's admin manual (server tuning -> PHP-FPM) sizes pm.max_children as RAM for PHP / average
    # process size; at least 4 so a sync client plus a browser never queue; capped for a group.
    children = (app_mb - opcache) // PHP_CHILD_MB
    max_children = ov.get("php_fpm_max_children", _clamp(children, 4, _PHP_MAX_CHILDREN_CAP))
    # Spares follow the pm calculator Nextcloud links to (min 25%, max 75% of max_children), and
    # php-fpm's own default for start_servers: min_spare + (max_spare - min_spare) / 2.
    min_spare = ov.get("php_fpm_min_spare", _clamp(max_children // 4, 1, max(1, max_children)))
    max_spare = ov.get("php_fpm_max_spare", min(max(min_spare + 1, max_children * 3 // 4), max(1, max_children)))
    return {
        "opcache_memory_mb": opcache,
        "php_fpm_max_children": max_children,
        "php_fpm_min_spare": min_spare,
        "php_fpm_max_spare": max_spare,
        "php_fpm_start_servers": ov.get("php_fpm_start_servers", min_spare + (max_spare - min_spare) // 2),
        # Nextcloud warns below memory_limit = 512M (a per-request ceiling, not the average).
        "php_memory_limit_mb": ov.get("php_memory_limit_mb", 512),
    }


def _synapse_cache_factor(shares: _Shares, app_mb: int, ov: Mapping[str, int | float]) -> float:
    # caches.global_factor: Synapse's default is 0.5; 0.5 per GB of the equivalent host gives
    # 0.5 at 1 GB, 1.0 at 2 GB, 2.0 at >= 4 GB (capped).  Too small a cache costs RAM
    # too (matrix-org/synapse#3939), so the floor stays at upstream's default.
    tier = _clamp(0.5 * size_class_gb(shares.equivalent_mb("matrix")), *_SYNAPSE_FACTOR_RANGE)
    # ...stepped down by 0.25 until the caches fit Synapse's budget.
    while tier > _SYNAPSE_FACTOR_RANGE[0] and SYNAPSE_BASE_MB + tier * SYNAPSE_MB_PER_CACHE_FACTOR > app_mb:
        tier -= 0.25
    return float(ov.get("synapse_cache_factor", float(tier)))


def _postgres(
    svc: frozenset[str], budget_mb: int, php_children: int, ov: Mapping[str, int | float]
) -> dict[str, int]:
    """The PostgreSQL that Nextcloud and Synapse share, tuned on its budget."""
    # PostgreSQL docs (runtime-config-resource): shared_buffers ~25% of the memory -- here of
    # PostgreSQL's budget, not of the whole host it shares.
    shared_buffers = ov.get(
        "postgres_shared_buffers_mb", min(_floor_to(budget_mb // 4, 8), _PG_SHARED_BUFFERS_CAP_MB)
    )
    # Connections: Synapse's pool (cp_max default 10) + one per php-fpm child + 10 spare
    # (superuser_reserved_connections 3, Nextcloud cron/occ, backups, an admin's psql).
    max_connections = ov.get("postgres_max_connections", (10 if "matrix" in svc else 0) + php_children + 10)
    return {
        "postgres_shared_buffers_mb": shared_buffers,
        # wiki.postgresql.org "Tuning Your PostgreSQL Server": effective_cache_size 50-75% of memory;
        # 75% of the budget.
        "postgres_effective_cache_size_mb": ov.get(
            "postgres_effective_cache_size_mb", _floor_to(budget_mb * 3 // 4, 8)
        ),
        "postgres_max_connections": max_connections,
        # pgtune's rule: (RAM - shared_buffers) / (max_connections * 3), on the budget; 2..16 MB.
        "postgres_work_mem_mb": ov.get(
            "postgres_work_mem_mb",
            _clamp((budget_mb - shared_buffers) // max(1, max_connections * 3), *_PG_WORK_MEM_RANGE),
        ),
        # pgtune uses RAM/16 for maintenance_work_mem; the budget is ~1/3 of RAM, so budget/8.
        "postgres_maintenance_work_mem_mb": ov.get(
            "postgres_maintenance_work_mem_mb",
            _clamp(_floor_to(budget_mb // 8, 8), *_PG_MAINTENANCE_WORK_MEM_RANGE),
        ),
    }


def _swap_mb(shares: _Shares) -> int:
    # discourse-setup insists on 2 GB of swap at <= 2 GB of RAM; we keep it up to 4 GB when Discourse
    # is on the host (./launcher rebuild peaks well above steady state).  Other hosts <= 2 GB get 1 GB
    # as an emergency buffer; larger ones none.  The budgets above fit in RAM, so swap only absorbs
    # peaks -- a Raspberry Pi's SD card is never swapped on in steady state (set vm.swappiness=10, as
    # discourse-setup does).
    if "discourse" in shares.weights and shares.size_class_gb <= 4:
        return 2048
    if shares.size_class_gb <= 2:
        return 1024
    return 0


def _check_overrides(overrides: Mapping[str, int | float] | None) -> dict[str, int | float]:
    if not overrides:
        return {}
    out: dict[str, int | float] = {}
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise ValueError(f"unknown sizing override {key!r}; valid names: {', '.join(_FIELDS)}")
        if key in _FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"sizing override {key!r} must be a non-negative number, got {value!r}")
            out[key] = float(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"sizing override {key!r} must be a non-negative integer, got {value!r}")
            out[key] = value
    return out


def _check_php_fpm(s: Sizing) -> None:
    # php-fpm (sapi/fpm/fpm/fpm_conf.c) refuses to start unless 1 <= min_spare <= start_servers <= max_spare <= max_children.
    if not (1 <= s.php_fpm_min_spare <= s.php_fpm_start_servers <= s.php_fpm_max_spare <= s.php_fpm_max_children):
        raise ValueError(
            "php-fpm needs 1 <= php_fpm_min_spare <= php_fpm_start_servers <= php_fpm_max_spare <= "
            f"php_fpm_max_children, got {s.php_fpm_min_spare} <= {s.php_fpm_start_servers} <= "
            f"{s.php_fpm_max_spare} <= {s.php_fpm_max_children}; adjust the overrides"
        )
