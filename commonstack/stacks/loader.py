"""Loading a group's profile: its preset, its overrides (deep-merged), validated offline.

Every failure becomes a ProfileError naming the file, the line, the key path and the fix.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from commonstack.errors import ProfileError
from commonstack.stacks.model import StackProfile
from commonstack.stacks.reading import EXCERPT, ReadError, excerpt, load_yaml, read_text

PRESETS_DIR = Path(__file__).parent / "presets"

# Names people reach for, or that older profiles used, mapped to what the kit calls them.
RENAMED_KEYS = {
    "synapse": "matrix",
    "forum": "discourse",
    "coturn": "matrix.turn",
    "email": "admin_email",
    "letsencrypt": "tls",
    "mail": "smtp",
}

# Keys an earlier version of the kit knew, and why they are gone.
RETIRED_KEYS = {
    "matrix.element": "Element Web is not installed by this version of the kit (its release could not be "
    "pinned with a checksum): remove the key; any Matrix client (Element desktop or mobile, app.element.io) "
    "works with the homeserver",
}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    smallest_host: str
    profile: dict[str, Any]
    path: Path


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str, referenced_from: Path | None = None) -> Preset:
    """One of the kit's presets, by name only: a name is never a path to another file."""
    names = preset_names()
    if name not in names:
        hint = _did_you_mean(name, names) if len(name) <= EXCERPT else ""
        raise ProfileError(
            referenced_from or "preset",
            f"unknown preset {excerpt(name)}{hint}; available: {', '.join(names)}",
            key="preset" if referenced_from else None,
        )
    path = PRESETS_DIR / f"{name}.yaml"
    data, _ = _read_yaml(path)
    return Preset(
        name=name,
        description=data["description"],
        smallest_host=data["smallest_host"],
        profile=data.get("profile", {}),
        path=path,
    )


def load_profile(path: Path, text: str | None = None) -> StackProfile:
    """Read a group's stack.yaml, merge it over its preset and validate the result.

    With `text`, that is validated as the content of `path` without reading or writing it
    (`init` checks a new profile before it creates anything).
    """
    group_data, group_tree = _read_yaml(path, text)
    preset, preset_tree = None, None
    merged = group_data
    if "preset" in group_data:
        if not isinstance(group_data["preset"], str):
            raise ProfileError(path, "expected a preset name like small-group", key="preset",
                               line=_line_of(group_tree, ("preset",)))
        preset = load_preset(group_data["preset"], referenced_from=path)
        preset_tree = _child(_read_yaml(preset.path)[1], "profile")
        merged = deep_merge(preset.profile, group_data)
    try:
        return StackProfile.model_validate(merged)
    except ValidationError as exc:
        raise _first_error(exc, path, group_data, group_tree, preset, preset_tree) from None


def deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) is replaced by the override."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, text: str | None = None) -> tuple[dict, yaml.Node | None]:
    try:
        data, tree = load_yaml(read_text(path) if text is None else text)
    except ReadError as exc:
        if exc.column:  # path:line:column, as compilers say it, for editors to jump to
            raise ProfileError(f"{path}:{exc.line}:{exc.column}", exc.message) from None
        raise ProfileError(path, exc.message, line=exc.line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(path, f"expected a mapping of keys at the top, got {type(data).__name__}")
    return data, tree


def _first_error(exc, path, group_data, group_tree, preset, preset_tree) -> ProfileError:
    error = exc.errors()[0]
    loc = _written(tuple(error["loc"]), deep_merge(preset.profile, group_data) if preset else group_data)
    key = _key_path(loc)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = _unknown_key_message(loc)
    elif error["type"] == "missing":
        message = f"required but missing: add '{loc[-1]}:'"
    elif "input" in error and error["type"] not in ("value_error", "assertion_error"):
        message = f"{message} (got {excerpt(error['input'])})"
    if not loc:  # a whole-profile rule: its message names its own key
        key = None
    # Blame the file where the value was written: the group's, unless only the preset has it.
    in_group = _lookup(group_data, loc) is not _MISSING
    if preset and not in_group and _lookup(preset.profile, loc) is not _MISSING:
        return ProfileError(preset.path, message, key=key, line=_line_of(preset_tree, loc))
    return ProfileError(path, message, key=key, line=_line_of(group_tree, loc))


def _written(loc: tuple, data: Any) -> tuple:
    """`loc` without what pydantic adds past a value (the member of a union it tried: 'int', 'float')."""
    for depth in range(len(loc)):
        if data is not _MISSING and not isinstance(data, (dict, list)):
            return loc[:depth]
        data = _lookup(data, loc[depth : depth + 1])
    return loc


def _key_path(loc: tuple) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        elif isinstance(part, str) and part.isidentifier() and len(part) <= EXCERPT:
            parts.append(part)
        else:  # a key as written in the file, however odd: quoted short, on one line
            parts.append(excerpt(part))
    return ".".join(parts)


def _unknown_key_message(loc: tuple) -> str:
    name = str(loc[-1])[: EXCERPT + 1]
    full = _key_path(loc)
    if full in RETIRED_KEYS:
        return f"unknown key: {RETIRED_KEYS[full]}"
    if full in RENAMED_KEYS or name in RENAMED_KEYS:
        return f"unknown key: it is called '{RENAMED_KEYS.get(full) or RENAMED_KEYS[name]}'"
    known = _fields_at(loc[:-1])
    return f"unknown key{_did_you_mean(name, known)}; valid keys here: {', '.join(known)}"


def _fields_at(loc: tuple) -> list[str]:
    model: Any = StackProfile
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = next(
            (a for a in (getattr(annotation, "__args__", None) or (annotation,))
             if isinstance(a, type) and issubclass(a, BaseModel)),
            annotation,
        )
        if getattr(annotation, "__origin__", None) is list:
            model = annotation.__args__[0]
    return list(model.model_fields)


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


_MISSING = object()


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _child(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]
    return None


def _line_of(tree: yaml.Node | None, loc: tuple) -> int | None:
    """Line of the deepest key of loc written in the file (1-based), for editor jumps."""
    node, line = tree, None
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line
