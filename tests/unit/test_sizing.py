"""Sizing rules: the tables below are the spec.

Every expected number was worked out by hand from the rules in
commonstack/stacks/sizing.py (see the worked example in
test_worked_example_small_group_on_2gb); if the code changes a number, the
table must be changed on purpose.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commonstack.stacks.sizing import (
    SERVICES,
    HostFacts,
    HostTooSmall,
    Sizing,
    UnsupportedArchitecture,
    compute_sizing,
    memory_footprint_mb,
    minimum_memory_mb,
    size_class_gb,
)

CHAT = frozenset({"matrix", "turn"})
SMALL_GROUP = frozenset({"nextcloud", "matrix", "turn"})
FORUM = frozenset({"discourse"})
FULL = frozenset({"nextcloud", "matrix", "turn", "discourse"})


def S(pg=(0, 0, 0, 0, 0), redis=0, php=(0, 0, 0, 0, 0, 0), synapse=0.0, discourse=(0, 0), swap=0) -> Sizing:
    """pg=(shared_buffers, effective_cache_size, work_mem, maintenance_work_mem, max_connections),
    php=(max_children, start_servers, min_spare, max_spare, memory_limit, opcache),
    discourse=(unicorn_workers, db_shared_buffers)."""
    return Sizing(
        postgres_shared_buffers_mb=pg[0],
        postgres_effective_cache_size_mb=pg[1],
        postgres_work_mem_mb=pg[2],
        postgres_maintenance_work_mem_mb=pg[3],
        postgres_max_connections=pg[4],
        redis_maxmemory_mb=redis,
        php_fpm_max_children=php[0],
        php_fpm_start_servers=php[1],
        php_fpm_min_spare=php[2],
        php_fpm_max_spare=php[3],
        php_memory_limit_mb=php[4],
        opcache_memory_mb=php[5],
        synapse_cache_factor=synapse,
        discourse_unicorn_workers=discourse[0],
        discourse_db_shared_buffers_mb=discourse[1],
        swap_mb=swap,
    )


# Hosts: amd64 VPSes as commonly sold (1 GB/1 vCPU, 2 GB/2, 4 GB/2, 8 GB/4) and
# Raspberry Pi 4/5 (arm64, 4 cores).  CPUs only matter to Discourse above 2 GB.
AMD64 = [(1024, 1), (2048, 2), (4096, 2), (8192, 4)]
ARM64 = [(1024, 4), (2048, 4), (4096, 4), (8192, 4)]

# (services, arch, memory_mb, cpus, expected Sizing)
TABLE = [
    # ---- chat: matrix + turn ---------------------------------------------------------------
    (CHAT, "amd64", 1024, 1, S(pg=(56, 176, 3, 24, 20), redis=32, synapse=0.5, swap=1024)),
    (CHAT, "amd64", 2048, 2, S(pg=(136, 416, 7, 64, 20), redis=96, synapse=1.0, swap=1024)),
    (CHAT, "amd64", 4096, 2, S(pg=(296, 896, 15, 144, 20), redis=224, synapse=2.0, swap=0)),
    (CHAT, "amd64", 8192, 4, S(pg=(632, 1912, 16, 312, 20), redis=256, synapse=2.0, swap=0)),
    (CHAT, "arm64", 1024, 4, S(pg=(56, 176, 3, 24, 20), redis=32, synapse=0.5, swap=1024)),
    (CHAT, "arm64", 2048, 4, S(pg=(136, 416, 7, 64, 20), redis=96, synapse=1.0, swap=1024)),
    (CHAT, "arm64", 4096, 4, S(pg=(296, 896, 15, 144, 20), redis=224, synapse=2.0, swap=0)),
    (CHAT, "arm64", 8192, 4, S(pg=(632, 1912, 16, 312, 20), redis=256, synapse=2.0, swap=0)),
    # ---- small group: nextcloud + matrix + turn (1 GB refused, see REFUSALS) ---------------
    (SMALL_GROUP, "amd64", 2048, 2,
     S(pg=(136, 416, 5, 64, 26), redis=96, php=(6, 2, 1, 4, 512, 128), synapse=0.5, swap=1024)),
    (SMALL_GROUP, "amd64", 4096, 2,
     S(pg=(296, 896, 8, 144, 36), redis=224, php=(16, 8, 4, 12, 512, 128), synapse=1.0, swap=0)),
    (SMALL_GROUP, "amd64", 8192, 4,
     S(pg=(632, 1912, 11, 312, 57), redis=256, php=(37, 18, 9, 27, 512, 128), synapse=2.0, swap=0)),
    (SMALL_GROUP, "arm64", 2048, 4,
     S(pg=(136, 416, 5, 64, 26), redis=96, php=(6, 2, 1, 4, 512, 128), synapse=0.5, swap=1024)),
    (SMALL_GROUP, "arm64", 4096, 4,
     S(pg=(296, 896, 8, 144, 36), redis=224, php=(16, 8, 4, 12, 512, 128), synapse=1.0, swap=0)),
    (SMALL_GROUP, "arm64", 8192, 4,
     S(pg=(632, 1912, 11, 312, 57), redis=256, php=(37, 18, 9, 27, 512, 128), synapse=2.0, swap=0)),
    # ---- forum: discourse alone (discourse-setup's numbers; CPUs count above 2 GB) ---------
    (FORUM, "amd64", 1024, 1, S(discourse=(2, 128), swap=2048)),
    (FORUM, "amd64", 2048, 2, S(discourse=(4, 256), swap=2048)),
    (FORUM, "amd64", 4096, 2, S(discourse=(4, 1024), swap=2048)),
    (FORUM, "amd64", 8192, 4, S(discourse=(8, 2048), swap=0)),
    (FORUM, "arm64", 1024, 4, S(discourse=(2, 128), swap=2048)),
    (FORUM, "arm64", 2048, 4, S(discourse=(4, 256), swap=2048)),
    (FORUM, "arm64", 4096, 4, S(discourse=(8, 1024), swap=2048)),
    (FORUM, "arm64", 8192, 4, S(discourse=(8, 2048), swap=0)),
    # ---- full: all four (1 and 2 GB refused); Discourse sized as a 2 GB / 4 GB host --------
    (FULL, "amd64", 4096, 2,
     S(pg=(144, 432, 5, 72, 27), redis=112, php=(7, 3, 1, 5, 512, 128), synapse=0.5,
       discourse=(4, 256), swap=2048)),
    (FULL, "amd64", 8192, 4,
     S(pg=(304, 912, 8, 152, 37), redis=240, php=(17, 8, 4, 12, 512, 128), synapse=1.0,
       discourse=(4, 1024), swap=0)),
    (FULL, "arm64", 4096, 4,
     S(pg=(144, 432, 5, 72, 27), redis=112, php=(7, 3, 1, 5, 512, 128), synapse=0.5,
       discourse=(4, 256), swap=2048)),
    (FULL, "arm64", 8192, 4,
     S(pg=(304, 912, 8, 152, 37), redis=240, php=(17, 8, 4, 12, 512, 128), synapse=1.0,
       discourse=(4, 1024), swap=0)),
]


def _id(row):
    services, arch, mem, cpus, _ = row
    name = {CHAT: "chat", SMALL_GROUP: "small-group", FORUM: "forum", FULL: "full"}[services]
    return f"{name}-{arch}-{mem}MB-{cpus}cpu"


@pytest.mark.parametrize("row", TABLE, ids=[_id(r) for r in TABLE])
def test_sizing_table(row):
    services, arch, mem, cpus, expected = row
    got = compute_sizing(HostFacts(memory_mb=mem, cpus=cpus, arch=arch), services)
    assert got == expected


def test_table_covers_every_preset_size_and_arch():
    covered = {(r[0], r[1], r[2]) for r in TABLE} | {(r[0], r[1], r[2]) for r in REFUSALS}
    for services in (CHAT, SMALL_GROUP, FORUM, FULL):
        for arch, hosts in (("amd64", AMD64), ("arm64", ARM64)):
            for mem, _ in hosts:
                assert (services, arch, mem) in covered


def test_worked_example_small_group_on_2gb():
    """The hand computation behind one table row, step by step."""
    # fixed: OS 192 + Caddy 48 + coturn 32 = 272; pool = 2048 - 272 = 1776 (no Discourse: all of it)
    # redis = 1776 // 16 = 111 -> 96 (multiple of 16, within 32..256); rest = 1776 - 96 - 8 = 1672
    # postgres budget = 1672 // 3 = 557; each app (php-fpm, synapse) = (1672 - 557) // 2 = 557
    # shared_buffers = 557 // 4 = 139 -> 136; effective_cache_size = 557 * 3 // 4 = 417 -> 416
    # php: opcache 128 (2 GB host); children = (557 - 128) // 64 = 6; min 6//4=1, max 6*3//4=4, start 1+3//2=2
    # connections = 10 (synapse cp_max) + 6 (children) + 10 = 26; work_mem = (557-136) // (26*3) = 5
    # maintenance_work_mem = 557 // 8 = 69 -> 64; synapse: its equivalent host is 2048/2 = 1 GB -> 0.5
    # swap: no discourse, 2 GB host -> 1024
    got = compute_sizing(HostFacts(2048, 2, "amd64"), SMALL_GROUP)
    assert (got.postgres_shared_buffers_mb, got.postgres_effective_cache_size_mb) == (136, 416)
    assert (got.php_fpm_max_children, got.php_fpm_min_spare, got.php_fpm_max_spare, got.php_fpm_start_servers) == (
        6, 1, 4, 2)
    assert (got.postgres_max_connections, got.postgres_work_mem_mb, got.postgres_maintenance_work_mem_mb) == (
        26, 5, 64)
    assert got.synapse_cache_factor == 0.5 and got.redis_maxmemory_mb == 96 and got.swap_mb == 1024


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------

REFUSALS = [
    (SMALL_GROUP, "amd64", 1024, 2048,
     "nextcloud + matrix + turn need at least 2048 MB of RAM; this host has 1024 MB "
     "(a 2 GB VPS or a Raspberry Pi 4 with 4 GB fits)"),
    (SMALL_GROUP, "arm64", 1024, 2048,
     "nextcloud + matrix + turn need at least 2048 MB of RAM; this host has 1024 MB "
     "(a 2 GB VPS or a Raspberry Pi 4 with 4 GB fits)"),
    (FULL, "amd64", 1024, 4096,
     "nextcloud + matrix + turn + discourse need at least 4096 MB of RAM; this host has 1024 MB "
     "(a 4 GB VPS or a Raspberry Pi 4 with 8 GB fits)"),
    (FULL, "amd64", 2048, 4096,
     "nextcloud + matrix + turn + discourse need at least 4096 MB of RAM; this host has 2048 MB "
     "(a 4 GB VPS or a Raspberry Pi 4 with 8 GB fits)"),
    (FULL, "arm64", 1024, 4096,
     "nextcloud + matrix + turn + discourse need at least 4096 MB of RAM; this host has 1024 MB "
     "(a 4 GB VPS or a Raspberry Pi 4 with 8 GB fits)"),
    (FULL, "arm64", 2048, 4096,
     "nextcloud + matrix + turn + discourse need at least 4096 MB of RAM; this host has 2048 MB "
     "(a 4 GB VPS or a Raspberry Pi 4 with 8 GB fits)"),
    (FORUM, "amd64", 768, 1024,
     "discourse needs at least 1024 MB of RAM (with 2 GB of swap; Discourse recommends 2 GB); "
     "this host has 768 MB (a 1 GB VPS or a Raspberry Pi 4 with 2 GB fits)"),
    (frozenset({"matrix", "discourse"}), "amd64", 2048, 3072,
     "matrix + discourse need at least 3072 MB of RAM; this host has 2048 MB "
     "(a 4 GB VPS or a Raspberry Pi 4 with 4 GB fits)"),
    (frozenset({"matrix"}), "amd64", 512, 1024,
     "matrix needs at least 1024 MB of RAM; this host has 512 MB "
     "(a 1 GB VPS or a Raspberry Pi 4 with 2 GB fits)"),
]


@pytest.mark.parametrize("services,arch,mem,needed,message", REFUSALS)
def test_refusals(services, arch, mem, needed, message):
    with pytest.raises(HostTooSmall) as exc:
        compute_sizing(HostFacts(mem, 4, arch), services)
    assert str(exc.value) == message
    assert exc.value.needed_mb == needed
    assert exc.value.memory_mb == mem
    assert message.startswith(exc.value.reason + "; ")
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("arch", ["armhf", "armel", "i386", "armv7l", "riscv64"])
@pytest.mark.parametrize("services", [FORUM, FULL, frozenset({"discourse", "turn"})])
def test_discourse_refused_on_unsupported_arch(arch, services):
    with pytest.raises(UnsupportedArchitecture) as exc:
        compute_sizing(HostFacts(8192, 4, arch), services)
    msg = str(exc.value)
    assert msg.startswith(f"discourse cannot run on {arch}: ")
    assert "amd64 and arm64 only" in msg
    assert "64-bit OS" in msg
    assert exc.value.service == "discourse" and exc.value.arch == arch
    assert isinstance(exc.value, ValueError) and not isinstance(exc.value, HostTooSmall)
    with pytest.raises(UnsupportedArchitecture):
        minimum_memory_mb(services, arch)


def test_arch_is_checked_before_memory():
    # a 1 GB armhf board asked for the full preset: the arch is the real blocker
    with pytest.raises(UnsupportedArchitecture):
        compute_sizing(HostFacts(1024, 4, "armhf"), FULL)


def test_armhf_runs_everything_but_discourse_with_the_same_tuning():
    for services in (CHAT, SMALL_GROUP):
        assert compute_sizing(HostFacts(4096, 4, "armhf"), services) == compute_sizing(
            HostFacts(4096, 4, "arm64"), services)


def test_uname_spellings_accepted():
    assert compute_sizing(HostFacts(4096, 4, "aarch64"), FORUM) == compute_sizing(HostFacts(4096, 4, "arm64"), FORUM)
    assert compute_sizing(HostFacts(4096, 2, "x86_64"), FULL) == compute_sizing(HostFacts(4096, 2, "amd64"), FULL)


# ---------------------------------------------------------------------------------------------
# minimum RAM and the MemTotal tolerance
# ---------------------------------------------------------------------------------------------

MINIMUMS = [
    (frozenset(), 512),
    (frozenset({"turn"}), 512),
    (frozenset({"matrix"}), 1024),
    (CHAT, 1024),
    (frozenset({"nextcloud"}), 1024),
    (frozenset({"nextcloud", "turn"}), 1024),
    (frozenset({"nextcloud", "matrix"}), 2048),
    (SMALL_GROUP, 2048),
    (FORUM, 1024),
    (frozenset({"discourse", "turn"}), 1024),
    (frozenset({"discourse", "matrix"}), 3072),
    (frozenset({"discourse", "nextcloud", "turn"}), 3072),
    (frozenset({"discourse", "nextcloud", "matrix"}), 4096),
    (FULL, 4096),
]


@pytest.mark.parametrize("services,expected", MINIMUMS)
def test_minimum_memory(services, expected):
    assert minimum_memory_mb(services, "amd64") == expected
    assert minimum_memory_mb(services, "arm64") == expected


def test_one_gb_vps_reporting_960_fits_chat():
    s = compute_sizing(HostFacts(960, 1, "amd64"), CHAT)
    assert s.synapse_cache_factor == 0.5
    assert s.swap_mb == 1024


@pytest.mark.parametrize(
    "services,nominal,lowest_accepted",
    [
        (CHAT, 1024, 922),  # 90% of 1024 = 921.6
        (frozenset({"nextcloud"}), 1024, 922),
        (FORUM, 1024, 922),
        (SMALL_GROUP, 2048, 1844),  # 1843.2
        (frozenset({"discourse", "matrix"}), 3072, 2765),  # 2764.8
        (FULL, 4096, 3687),  # 3686.4
    ],
)
def test_memtotal_slack_edge(services, nominal, lowest_accepted):
    assert minimum_memory_mb(services, "amd64") == nominal
    compute_sizing(HostFacts(lowest_accepted, 1, "amd64"), services)
    with pytest.raises(HostTooSmall) as exc:
        compute_sizing(HostFacts(lowest_accepted - 1, 1, "amd64"), services)
    assert exc.value.needed_mb == nominal


def test_real_memtotals_of_sold_hosts():
    # a 2 GB VPS (~1.9 GiB MemTotal) carries the small-group preset, sized as a 2 GB host
    assert compute_sizing(HostFacts(1950, 2, "amd64"), SMALL_GROUP).opcache_memory_mb == 128
    # a 4 GB Raspberry Pi 4 (~3.7 GiB after the GPU/CMA reserve) carries the full preset
    pi = compute_sizing(HostFacts(3796, 4, "arm64"), FULL)
    assert pi.discourse_unicorn_workers == 4 and pi.swap_mb == 2048
    # a 1 GB VPS reporting 960 MB: Discourse gets upstream's 128 MB buffers but one worker, not two
    forum = compute_sizing(HostFacts(960, 1, "amd64"), FORUM)
    assert (forum.discourse_unicorn_workers, forum.discourse_db_shared_buffers_mb, forum.swap_mb) == (1, 128, 2048)


@pytest.mark.parametrize(
    "mem,gb", [(512, 0), (921, 0), (922, 1), (960, 1), (1024, 1), (1843, 1), (1844, 2), (1950, 2),
               (3796, 4), (4096, 4), (4500, 4), (4608, 5), (7900, 8), (16384, 16)])
def test_size_class(mem, gb):
    assert size_class_gb(mem) == gb


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------


def test_unknown_and_implied_services_rejected():
    with pytest.raises(ValueError, match="unknown service.*'gitea'.*valid services: nextcloud, matrix, turn, discourse"):
        compute_sizing(HostFacts(4096, 2, "amd64"), frozenset({"gitea", "matrix"}))
    with pytest.raises(ValueError, match="implied"):
        minimum_memory_mb(frozenset({"postgres", "matrix"}), "amd64")


def test_host_without_services_gets_the_base_and_neutral_values():
    assert minimum_memory_mb(frozenset(), "armhf") == 512
    s = compute_sizing(HostFacts(512, 1, "armhf"), frozenset())
    assert s == S(swap=1024)
    with pytest.raises(HostTooSmall, match="^caddy needs at least 512 MB of RAM; this host has 256 MB"):
        compute_sizing(HostFacts(256, 1, "amd64"), frozenset())


@pytest.mark.parametrize("kwargs", [
    dict(memory_mb=0, cpus=1, arch="amd64"),
    dict(memory_mb=1024, cpus=0, arch="amd64"),
    dict(memory_mb=1024, cpus=1, arch=""),
    dict(memory_mb=1024.5, cpus=1, arch="amd64"),
])
def test_hostfacts_validation(kwargs):
    with pytest.raises(ValueError):
        HostFacts(**kwargs)


# ---------------------------------------------------------------------------------------------
# overrides
# ---------------------------------------------------------------------------------------------


def test_override_replaces_computed_value():
    base = compute_sizing(HostFacts(4096, 2, "amd64"), SMALL_GROUP)
    got = compute_sizing(HostFacts(4096, 2, "amd64"), SMALL_GROUP,
                         {"synapse_cache_factor": 1.5, "redis_maxmemory_mb": 64, "swap_mb": 512})
    assert got == dataclasses.replace(base, synapse_cache_factor=1.5, redis_maxmemory_mb=64, swap_mb=512)


def test_override_int_accepted_for_float_field():
    got = compute_sizing(HostFacts(2048, 1, "amd64"), CHAT, {"synapse_cache_factor": 1})
    assert got.synapse_cache_factor == 1.0 and isinstance(got.synapse_cache_factor, float)


def test_override_flows_into_derived_values():
    # small-group on 4 GB computes 16 children; overriding to 10 re-derives what depends on it:
    # spares 10//4=2, 10*3//4=7, start 2+5//2=4; connections 10+10+10=30; work_mem (1197-296)//90=10
    got = compute_sizing(HostFacts(4096, 2, "amd64"), SMALL_GROUP, {"php_fpm_max_children": 10})
    assert (got.php_fpm_max_children, got.php_fpm_min_spare, got.php_fpm_max_spare, got.php_fpm_start_servers) == (
        10, 2, 7, 4)
    assert (got.postgres_max_connections, got.postgres_work_mem_mb) == (30, 10)
    # ...unless those are overridden too
    got = compute_sizing(HostFacts(4096, 2, "amd64"), SMALL_GROUP,
                         {"php_fpm_max_children": 10, "postgres_max_connections": 100})
    assert got.postgres_max_connections == 100 and got.postgres_work_mem_mb == 3  # (1197-296)//300


def test_override_discourse_buffers_limits_workers_to_budget():
    # forum on 1 GB: 720 MB for Discourse; 512 MB of buffers leave room for no worker beyond the floor of 1
    got = compute_sizing(HostFacts(1024, 1, "amd64"), FORUM, {"discourse_db_shared_buffers_mb": 512})
    assert (got.discourse_db_shared_buffers_mb, got.discourse_unicorn_workers) == (512, 1)


def test_unknown_override_names_key_and_lists_valid_names():
    with pytest.raises(ValueError) as exc:
        compute_sizing(HostFacts(4096, 2, "amd64"), SMALL_GROUP, {"php_max_children": 8})
    msg = str(exc.value)
    assert "'php_max_children'" in msg
    for name in (f.name for f in dataclasses.fields(Sizing)):
        assert name in msg


@pytest.mark.parametrize("value", [-1, 8.5, "8", True, None])
def test_override_bad_value(value):
    with pytest.raises(ValueError, match="php_fpm_max_children"):
        compute_sizing(HostFacts(4096, 2, "amd64"), SMALL_GROUP, {"php_fpm_max_children": value})


def test_override_that_php_fpm_would_refuse():
    with pytest.raises(ValueError, match="php-fpm needs"):
        compute_sizing(HostFacts(4096, 2, "amd64"), SMALL_GROUP,
                       {"php_fpm_max_children": 8, "php_fpm_max_spare": 12})


def test_overrides_do_not_bypass_refusals():
    with pytest.raises(HostTooSmall):
        compute_sizing(HostFacts(1024, 1, "amd64"), SMALL_GROUP, {"php_fpm_max_children": 4})


# ---------------------------------------------------------------------------------------------
# the memory model, and the property
# ---------------------------------------------------------------------------------------------


def footprint(s: Sizing, services: frozenset[str]) -> dict[str, int]:
    """The spec's memory model (MB), written out independently of the module."""
    fp = {"os": 192, "caddy": 48}
    if "turn" in services:
        fp["coturn"] = 32
    if "discourse" in services:
        fp["docker"] = 64
        fp["discourse"] = 320 + 128 * s.discourse_unicorn_workers + s.discourse_db_shared_buffers_mb
    if services & {"nextcloud", "matrix"}:
        fp["postgres"] = 48 + s.postgres_shared_buffers_mb + 4 * s.postgres_max_connections + \
            s.postgres_maintenance_work_mem_mb
        fp["redis"] = s.redis_maxmemory_mb + 8
    if "nextcloud" in services:
        fp["php_fpm"] = 64 * s.php_fpm_max_children + s.opcache_memory_mb
    if "matrix" in services:
        fp["synapse"] = 192 + math.ceil(256 * s.synapse_cache_factor)
    return fp


@pytest.mark.parametrize("row", TABLE, ids=[_id(r) for r in TABLE])
def test_table_rows_fit_in_ram(row):
    services, arch, mem, cpus, expected = row
    assert memory_footprint_mb(expected, services) == footprint(expected, services)
    assert sum(footprint(expected, services).values()) < mem


service_sets = st.sets(st.sampled_from(SERVICES)).map(frozenset)


@settings(max_examples=600, deadline=None)
@given(
    memory_mb=st.integers(512, 65536),
    cpus=st.integers(1, 64),
    arch=st.sampled_from(["amd64", "arm64", "x86_64", "aarch64"]),
    services=service_sets,
)
def test_property_refused_or_fits(memory_mb, cpus, arch, services):
    facts = HostFacts(memory_mb, cpus, arch)
    needed = minimum_memory_mb(services, arch)
    try:
        s = compute_sizing(facts, services)
    except HostTooSmall as exc:
        assert exc.needed_mb == needed
        assert memory_mb * 10 < needed * 9  # refused only below 90% of the nominal minimum
        return
    assert memory_mb * 10 >= needed * 9
    fp = footprint(s, services)
    assert memory_footprint_mb(s, services) == fp
    assert sum(fp.values()) < memory_mb

    for f in dataclasses.fields(Sizing):
        assert getattr(s, f.name) >= 0
    # neutral values for what is not on the host
    if "nextcloud" not in services:
        assert (s.php_fpm_max_children, s.php_fpm_start_servers, s.php_fpm_min_spare, s.php_fpm_max_spare,
                s.php_memory_limit_mb, s.opcache_memory_mb) == (0, 0, 0, 0, 0, 0)
    else:
        assert 1 <= s.php_fpm_min_spare <= s.php_fpm_start_servers <= s.php_fpm_max_spare <= s.php_fpm_max_children
        assert 4 <= s.php_fpm_max_children <= 64
        assert s.php_memory_limit_mb == 512 and s.opcache_memory_mb in (64, 128)
    if "matrix" not in services:
        assert s.synapse_cache_factor == 0.0
    else:
        assert 0.5 <= s.synapse_cache_factor <= 2.0
    if not services & {"nextcloud", "matrix"}:
        assert (s.postgres_shared_buffers_mb, s.postgres_effective_cache_size_mb, s.postgres_work_mem_mb,
                s.postgres_maintenance_work_mem_mb, s.postgres_max_connections, s.redis_maxmemory_mb) == (
            0, 0, 0, 0, 0, 0)
    else:
        assert 32 <= s.redis_maxmemory_mb <= 256
        assert s.postgres_shared_buffers_mb > 0 and 2 <= s.postgres_work_mem_mb <= 16
        assert s.postgres_max_connections >= (10 if "matrix" in services else 0) + s.php_fpm_max_children + 10
    if "discourse" not in services:
        assert (s.discourse_unicorn_workers, s.discourse_db_shared_buffers_mb) == (0, 0)
    else:
        assert 1 <= s.discourse_unicorn_workers <= 8
        assert 128 <= s.discourse_db_shared_buffers_mb <= 4096
        if memory_mb <= 4 * 1024:
            assert s.swap_mb == 2048  # Discourse's swap rule


@settings(max_examples=200, deadline=None)
@given(memory_mb=st.integers(512, 65536), cpus=st.integers(1, 16), services=service_sets)
def test_property_32bit_arm_refuses_only_discourse(memory_mb, cpus, services):
    facts = HostFacts(memory_mb, cpus, "armhf")
    if "discourse" in services:
        with pytest.raises(UnsupportedArchitecture):
            compute_sizing(facts, services)
        return
    try:
        got = compute_sizing(facts, services)
    except HostTooSmall:
        with pytest.raises(HostTooSmall):
            compute_sizing(HostFacts(memory_mb, cpus, "arm64"), services)
        return
    assert got == compute_sizing(HostFacts(memory_mb, cpus, "arm64"), services)
