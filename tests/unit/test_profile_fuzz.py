"""Generated malformed profiles: the loader answers with its own clear error, never a crash."""

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonstack.errors import ProfileError
from commonstack.inventories.groups import Group
from commonstack.inventories.secrets import redacted
from commonstack.stacks.loader import load_profile
from commonstack.plan import plan_group

KEYS = ["preset", "group", "domain", "admin_email", "hosts", "name", "address", "port", "matrix",
        "nextcloud", "discourse", "enabled", "host", "turn", "external_ip", "tls", "mode", "smtp",
        "backup", "repository", "sizing", "bogus", "server_name", "registration", "acme_ca"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["small-group", "chat", "vps", "203.0.113.7", "a@b.org", "x.org"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=25,
)
# Mostly valid profiles with one part replaced by something generated: they get past the
# first keys and reach the deeper rules (placement, sizing overrides, TLS, backup, rendering).
VALID = {"preset": "small-group", "group": "g", "domain": "example.org", "admin_email": "a@example.org",
         "hosts": [{"name": "vps", "address": "203.0.113.7"}]}
near_valid = st.tuples(st.sampled_from(KEYS), values).map(lambda kv: yaml.safe_dump({**VALID, kv[0]: kv[1]}))
host_tweaks = st.dictionaries(st.sampled_from(["memory_mb", "cpus", "arch", "sizing", "port", "name"]), values, max_size=3)
tweaked_hosts = host_tweaks.map(lambda t: yaml.safe_dump({**VALID, "hosts": [{**VALID["hosts"][0], **t}]}))
documents = st.one_of(
    near_valid,
    tweaked_hosts,
    st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(lambda d: yaml.safe_dump(d)),
    st.text(max_size=200),  # arbitrary text: often not YAML at all
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=documents)
def test_loader_never_raises_anything_but_a_profile_error(tmp_path: Path, text: str):
    path = tmp_path / "stack.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        profile = load_profile(path)
        # A profile that loads is planned offline too (sizing, rendering): same promise.
        plan_group(Group("g", tmp_path), profile, redacted(profile))
    except ProfileError as error:
        message = str(error)
        assert message.startswith(str(path)) or message.startswith(str(tmp_path))
        assert "\n" not in message, "errors are one line"
        assert "Traceback" not in message


def test_the_generated_profiles_do_reach_planning(tmp_path: Path):
    """The strategies above start from this document: it must load and plan, or they test little."""
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(VALID))
    profile = load_profile(path)
    assert plan_group(Group("g", tmp_path), profile, redacted(profile))[0].files


def test_bad_sizing_overrides_are_profile_errors(tmp_path: Path):
    path = tmp_path / "stack.yaml"
    for sizing in ({"bogus_field": 1}, {"php_fpm_max_children": -5}):
        path.write_text(yaml.safe_dump({**VALID, "hosts": [{**VALID["hosts"][0], "sizing": sizing}]}))
        profile = load_profile(path)
        try:
            plan_group(Group("g", tmp_path), profile, redacted(profile))
        except ProfileError as error:
            assert "hosts[0].sizing" in str(error)
        else:
            raise AssertionError(f"{sizing} was accepted")
