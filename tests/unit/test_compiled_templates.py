"""The templates' compiled code kept between commands (rendering._CompiledTemplates): a plan
rendered from the cache is the plan rendered from the sources, a changed template is compiled
again, and a cache that cannot be used costs nothing but the compilation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from commonstack import rendering
from commonstack.plan import Release, plan_host
from commonstack.stacks.loader import load_profile
from commonstack.stacks.sizing import HostFacts
from tests.unit.test_templates import secrets_for

PROFILE = Path(__file__).parent / "fixtures" / "templates" / "full.yaml"


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    """jinja2's per-user cache folder, made in a temporary folder of the test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rendering._environment.cache_clear()
    yield tmp_path
    rendering._environment.cache_clear()


def _files() -> dict[str, str]:
    rendering._environment.cache_clear()  # as a new command would start
    profile = load_profile(PROFILE)
    host = profile.hosts[0]
    plan = plan_host(profile, host, secrets_for(profile), Release(HostFacts(memory_mb=8000, cpus=4, arch="amd64"), "bookworm"))
    return {f.path: f.content for f in plan.files}


def test_a_plan_rendered_from_the_compiled_templates_is_the_plan_rendered_from_their_sources(cache_folder):
    fresh = _files()
    stored = sorted(cache_folder.rglob("commonstack-*.cache"))
    assert len(stored) >= 20 and all(p.parent.stat().st_mode & 0o777 == 0o700 for p in stored)
    before = {p: p.stat().st_mtime_ns for p in stored}
    assert _files() == fresh
    assert {p: p.stat().st_mtime_ns for p in stored} == before  # loaded, not compiled and written again


def test_a_changed_template_is_compiled_again(cache_folder, tmp_path_factory, monkeypatch):
    copy = tmp_path_factory.mktemp("templates")
    (copy / "t.j2").write_text("first {{ value }}\n")
    monkeypatch.setattr(rendering, "TEMPLATES_DIR", copy)
    rendering._environment.cache_clear()
    assert rendering._environment().get_template("t.j2").render(value="x") == "first x\n"
    (copy / "t.j2").write_text("second {{ value }}\n")
    rendering._environment.cache_clear()
    assert rendering._environment().get_template("t.j2").render(value="x") == "second x\n"


def test_a_cache_that_cannot_be_used_costs_only_the_compilation(cache_folder):
    fresh = _files()
    for stored in cache_folder.rglob("commonstack-*.cache"):
        stored.write_bytes(b"not jinja2's")  # damaged: jinja2 finds no header of its own, compiles again
    assert _files() == fresh
    unusable = rendering._CompiledTemplates(str(cache_folder / "a file"))
    (cache_folder / "a file").write_text("")  # its "folder" is a file: neither read nor written
    rendering._environment.cache_clear()
    environment = rendering._environment()
    environment.bytecode_cache = unusable
    assert environment.get_template("base/etc/ssh/sshd_config.d/50-commonstack.conf.j2") is not None
