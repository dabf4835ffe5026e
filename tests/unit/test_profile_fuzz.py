"""Generated malformed profiles: the loader answers with its own clear error, never a crash."""

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commonstack.errors import ProfileError
from commonstack.stacks.loader import load_profile

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
documents = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(lambda d: yaml.safe_dump(d)),
    st.text(max_size=200),  # arbitrary text: often not YAML at all
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=documents)
def test_loader_never_raises_anything_but_a_profile_error(tmp_path: Path, text: str):
    path = tmp_path / "stack.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_profile(path)
    except ProfileError as error:
        message = str(error)
        assert message.startswith(str(path)) or message.startswith(str(tmp_path))
        assert "\n" not in message, "errors are one line"
        assert "Traceback" not in message
