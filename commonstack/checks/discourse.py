"""Health checks of Discourse: app.yml and its mail relay, the pinned
discourse_docker checkout, the container, its socket, and /srv/status through Caddy's HTTPS.

The checks that need a built forum skip, saying why, on a host where only the prerequisites were
deployed (nothing fetched from github.com or Docker Hub yet).
"""

from __future__ import annotations

import pytest
import yaml

from commonstack.checks.expect import require_layer
from commonstack.checks.probes import https_request
from commonstack.stacks.paths import DISCOURSE_APP_YML as APP_YML
from commonstack.stacks.paths import DISCOURSE_BUILD_STAMP as BUILD_STAMP
from commonstack.stacks.paths import DISCOURSE_CONTAINER as CONTAINER
from commonstack.stacks.paths import DISCOURSE_DIR
from commonstack.stacks.paths import DISCOURSE_SOCKET as SOCKET

NOT_BUILT = (
    "Discourse is not built here: only its prerequisites were deployed (Docker, app.yml); "
    "`commonstack deploy` from a host that reaches github.com and Docker Hub builds it"
)


@pytest.fixture(scope="module")
def built(host, stack) -> None:
    """Skips the checks of a forum that was never fetched and built on this host."""
    require_layer(stack, "discourse")
    if not host.file(f"{DISCOURSE_DIR}/.git").is_directory:
        pytest.skip(NOT_BUILT)


def _container_state(host) -> str:
    result = host.run("docker container inspect --format '{{.State.Status}}' %s", CONTAINER)
    return result.stdout.strip() if result.rc == 0 else "absent"


def test_app_yml_is_private_and_names_the_mail_relay(host, stack):
    require_layer(stack, "discourse")
    app_yml = host.file(APP_YML)
    assert app_yml.exists, f"{APP_YML} is missing: run `commonstack deploy`"
    assert (app_yml.user, app_yml.mode) == ("root", 0o600), f"{APP_YML} must be root's, mode 0600 (SMTP password)"
    # Only booleans reach the assertions: app.yml holds the SMTP password.
    env = (yaml.safe_load(app_yml.content_string) or {}).get("env") or {}
    right_hostname = env.get("DISCOURSE_HOSTNAME") == stack["hostnames"]["discourse"]
    right_relay = env.get("DISCOURSE_SMTP_ADDRESS") == stack["discourse_smtp_host"]
    assert right_hostname, f"{APP_YML} names another hostname than the profile: run `commonstack deploy`"
    assert right_relay, f"{APP_YML} does not send mail through {stack['discourse_smtp_host']}: run `commonstack deploy`"


def test_discourse_docker_is_pinned_and_built_from(host, stack, built):
    head = host.run("git -C %s rev-parse HEAD", DISCOURSE_DIR).stdout.strip()
    assert host.run("git -C %s symbolic-ref -q HEAD", DISCOURSE_DIR).rc != 0, (
        f"{DISCOURSE_DIR} is on a branch: `launcher rebuild` would update itself; run `commonstack deploy`"
    )
    dirty = host.run("git -C %s status --porcelain --untracked-files=no", DISCOURSE_DIR).stdout.strip()
    assert not dirty, f"files of discourse_docker were edited in {DISCOURSE_DIR}: `git -C {DISCOURSE_DIR} diff`"
    digest = host.check_output("sha256sum %s", APP_YML).split()[0]
    stamp = host.file(BUILD_STAMP)
    recorded = stamp.content_string.strip() if stamp.exists else ""
    assert recorded == f"discourse_docker={head} app.yml=sha256:{digest}", (
        f"the container was not built from the current app.yml and discourse_docker {head[:12]} "
        "(edited by hand, or the last rebuild failed): run `commonstack deploy`"
    )


def test_discourse_container_runs(host, stack, built):
    state = _container_state(host)
    assert state == "running", (
        f"the Discourse container is {state}: `cd {DISCOURSE_DIR} && ./launcher logs {CONTAINER}`, "
        f"then `./launcher start {CONTAINER}` or `commonstack deploy`"
    )


def test_discourse_listens_on_its_socket(host, stack, built):
    assert host.file(SOCKET).is_socket, (
        f"no socket at {SOCKET}: nginx in the container is down, or app.yml lacks "
        f"web.socketed.template.yml; `cd {DISCOURSE_DIR} && ./launcher logs {CONTAINER}`"
    )
    answer = host.run(
        "curl -sS --max-time 15 --unix-socket %s -H %s http://localhost/srv/status",
        SOCKET,
        f"Host: {stack['hostnames']['discourse']}",
    )
    assert answer.rc == 0 and answer.stdout.strip() == "ok", (
        f"Discourse does not answer /srv/status on its socket: `cd {DISCOURSE_DIR} && ./launcher logs {CONTAINER}`"
    )


def test_discourse_answers_through_https(stack, built, trust):
    name = stack["hostnames"]["discourse"]
    try:
        status, _, raw = https_request(stack["address"], name, trust, path="/srv/status", timeout=20)
        body = raw[:4096].decode("utf-8", "replace")
    except OSError as exc:
        pytest.fail(f"https://{name}/srv/status: no answer ({exc}); is port 443 open? `journalctl -u caddy`")
    assert (status, body.strip()) == (200, "ok"), (
        f"https://{name}/srv/status answers {status}: 502 means Caddy cannot reach {SOCKET} "
        f"(`./launcher logs {CONTAINER}` in {DISCOURSE_DIR}, `journalctl -u caddy`)"
    )


def test_the_container_sends_mail_through_the_relay(host, stack, built):
    # Only the one variable is compared, on the host: the container's environment holds the password.
    wanted = f"DISCOURSE_SMTP_ADDRESS={stack['discourse_smtp_host']}"
    env = host.run("docker container inspect --format '{{range .Config.Env}}{{println .}}{{end}}' %s", CONTAINER)
    exists, configured = env.rc == 0, wanted in env.stdout.splitlines()
    assert exists, "the Discourse container does not exist: run `commonstack deploy`"
    assert configured, (
        f"the running container does not send mail through {stack['discourse_smtp_host']}: it was built "
        "before SMTP was configured; run `commonstack deploy` (it rebuilds)"
    )
