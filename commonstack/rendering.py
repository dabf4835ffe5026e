"""Rendering a layer's config files, offline, from its jinja2 templates.

Templates live in templates/<layer>/ laid out like the paths they are written to; a path
segment may name a release-dependent version ({php_version}, {postgresql_version}). Each
layer's folder may hold a files.yaml giving mode/owner/group of files that are not 0644 root.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from commonstack import formats
from commonstack.stacks.reading import load_kit_yaml

TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class ConfigFile:
    layer: str
    path: str
    content: str
    mode: str = "0644"
    user: str = "root"
    group: str = "root"


def render_layer(layer: str, context: dict[str, Any]) -> list[ConfigFile]:
    """Every file of templates/<layer>/, rendered with `context` (StrictUndefined)."""
    folder = TEMPLATES_DIR / layer
    meta = _file_meta(layer)
    rendered = []
    for template in sorted(folder.rglob("*.j2")):
        relative = template.relative_to(folder).as_posix()
        target = "/" + relative.removesuffix(".j2").format(**context)
        content = _environment().get_template(f"{layer}/{relative}").render(context)
        rendered.append(ConfigFile(layer=layer, path=target, content=content, **meta.get(target, {})))
    return rendered


@cache
def _file_meta(layer: str) -> dict[str, dict[str, str]]:
    meta_file = TEMPLATES_DIR / layer / "files.yaml"
    if not meta_file.is_file():
        return {}
    return {path: {k: str(v) for k, v in attrs.items()} for path, attrs in load_kit_yaml(meta_file).items()}


@jinja2.pass_context
def _one_value(context: jinja2.runtime.Context, value: Any) -> Any:
    """Every {{ ... }} of every template: a number, or text of one line (whatever filter it went
    through), never None or a boolean (a template bug that would write 'None' into a config)."""
    if isinstance(value, str):
        return formats.one_line(value, context.name.removesuffix(".j2"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise formats.UnsafeValue(f"{context.name}: a template wrote {type(value).__name__}, not text or a number")


class _CompiledTemplates(jinja2.FileSystemBytecodeCache):
    """Templates compiled once, not at every command (0.08 s of CPU for all of them). jinja2 keeps
    them in a folder of the user's own (0700, checked) and compiles one again when its source
    changed; the file names carry a digest of this module, of formats.py and of jinja2's version:
    the environment's options below shape the compiled code, and jinja2 runs a filter on a
    constant when it compiles. A cache that cannot be read or written (a full disk) costs a
    compilation, nothing else. (Another version of the kit leaves its own files beside them.)"""

    def __init__(self, directory: str | None = None) -> None:
        sources = Path(__file__).read_bytes() + Path(formats.__file__).read_bytes() + jinja2.__version__.encode()
        super().__init__(directory, pattern=f"commonstack-{hashlib.sha256(sources).hexdigest()[:16]}-%s.cache")

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except OSError:
            pass

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _compiled_templates() -> jinja2.BytecodeCache | None:
    try:
        return _CompiledTemplates()
    except (OSError, RuntimeError):  # no temporary folder of the user's own: compile every time
        return None


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_one_value,
        bytecode_cache=_compiled_templates(),
    )
    # One filter per format a value is written into (see formats.py); YAML and JSON use tojson.
    environment.filters.update({
        "caddy": formats.caddy,
        "caddy_address": formats.caddy_address,
        "systemd": formats.systemd,
        "systemd_arg": formats.systemd_arg,
        "systemd_env": formats.systemd_env,
        "shell": formats.shell,
        "conf": formats.conf,
        "line": formats.one_line,
        "sudoers_user": formats.sudoers_user,
    })
    return environment
