"""The profile loader: presets merged, and every kind of bad input named precisely."""

from pathlib import Path

import pytest

from commonstack.errors import ProfileError
from commonstack.stacks.loader import deep_merge, load_preset, load_profile, preset_names

GOOD = """\
preset: small-group
group: tenants
domain: tenants.example.org
admin_email: admin@example.org
hosts:
  - name: vps
    address: 203.0.113.7
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ProfileError) as caught:
        load_profile(write(tmp_path, text))
    return str(caught.value)


def test_preset_is_merged_under_the_group_overrides(tmp_path):
    profile = load_profile(write(tmp_path, GOOD + "matrix:\n  registration: token\n"))
    assert profile.nextcloud.enabled and profile.matrix.enabled and profile.matrix.turn.enabled
    assert profile.matrix.registration == "token"
    assert not profile.discourse.enabled
    assert profile.hostnames() == {"nextcloud": "cloud.tenants.example.org", "matrix": "matrix.tenants.example.org"}
    assert profile.server_name == "tenants.example.org"


def test_deep_merge_merges_mappings_and_replaces_lists():
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"c": 3}, "l": [9]}) == {
        "a": {"b": 1, "c": 3},
        "l": [9],
    }


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_loads_for_a_group(tmp_path, preset):
    hosts = "hosts:\n  - {name: home, address: 192.168.1.20}\n  - {name: vps, address: 203.0.113.7}\n"
    smtp = "smtp: {host: smtp.example.org, username: forum}\n"
    text = f"preset: {preset}\ngroup: g\ndomain: example.org\nadmin_email: a@example.org\n{hosts}{smtp}"
    profile = load_profile(write(tmp_path, text))
    preset_profile = load_preset(preset).profile
    promised = {s for s in ("nextcloud", "matrix", "discourse") if preset_profile.get(s, {}).get("enabled")}
    assert set(profile.enabled_services()) == promised
    for service in promised:  # placed where the preset says, else on the first host
        assert profile.host_of(service).name == preset_profile[service].get("host", "home")


def test_malformed_yaml_names_line_and_column(tmp_path):
    message = error_of(tmp_path, GOOD + "matrix: [unclosed\n")
    assert message.startswith(f"{tmp_path}/stack.yaml:9:")
    assert "malformed YAML" in message


def test_unknown_key_suggests_the_right_one(tmp_path):
    message = error_of(tmp_path, GOOD + "matrix:\n  regstration: token\n")
    assert "stack.yaml:9: matrix.regstration: unknown key (did you mean 'registration'?)" in message


def test_renamed_key_says_what_it_is_called_now(tmp_path):
    message = error_of(tmp_path, GOOD + "synapse:\n  enabled: true\n")
    assert "synapse: unknown key: it is called 'matrix'" in message


def test_a_retired_key_says_why_it_is_gone(tmp_path):
    message = error_of(tmp_path, GOOD + "matrix:\n  element:\n    enabled: true\n")
    assert "stack.yaml:10: matrix.element: unknown key: Element Web is not installed by this version" in message
    assert "any Matrix client" in message


def test_wrong_type_names_key_and_value(tmp_path):
    message = error_of(tmp_path, GOOD.replace("address: 203.0.113.7", "address: 203.0.113.7\n    port: ssh"))
    assert "hosts[0].port" in message and "'ssh'" in message


def test_missing_domain_says_what_to_add(tmp_path):
    message = error_of(tmp_path, GOOD.replace("domain: tenants.example.org\n", ""))
    assert "domain: required but missing: add 'domain:'" in message


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("domain: tenants.example.org", "domain: not a domain", "domain"),
        ("admin_email: admin@example.org", "admin_email: nobody", "admin_email"),
        ("address: 203.0.113.7", "address: bad_host!", "hosts[0].address"),
    ],
)
def test_invalid_values_are_named(tmp_path, old, new, key):
    assert f"{key}: expected" in error_of(tmp_path, GOOD.replace(old, new))


def test_duplicate_host(tmp_path):
    message = error_of(tmp_path, GOOD + "  - name: vps\n    address: 203.0.113.8\n")
    assert "'vps' is declared twice" in message


def test_service_on_unknown_host(tmp_path):
    message = error_of(tmp_path, GOOD + "matrix:\n  host: pi\n")
    assert "matrix.host: 'pi' is not a declared host (declared: vps)" in message


def test_unknown_preset_suggests_one(tmp_path):
    message = error_of(tmp_path, GOOD.replace("small-group", "smal-group"))
    assert "stack.yaml: preset: unknown preset 'smal-group' (did you mean 'small-group'?)" in message


def test_forum_without_smtp_names_the_keys(tmp_path):
    message = error_of(tmp_path, GOOD.replace("small-group", "forum"))
    assert "discourse is enabled but smtp is not set" in message and "smtp_password" in message


def test_error_in_a_key_only_the_preset_wrote_blames_the_preset(tmp_path, monkeypatch):
    import commonstack.stacks.loader as loader

    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "broken.yaml").write_text("description: x\nsmallest_host: y\nprofile:\n  matrix:\n    enabled: maybe\n")
    monkeypatch.setattr(loader, "PRESETS_DIR", presets)
    message = error_of(tmp_path, GOOD.replace("small-group", "broken"))
    assert message.startswith(f"{presets}/broken.yaml:5: matrix.enabled:")


def test_top_level_must_be_a_mapping(tmp_path):
    assert "expected a mapping of keys at the top" in error_of(tmp_path, "- just\n- a list\n")
