"""The Docker engine that discourse_docker's launcher drives: Debian's docker.io.

Why Debian's docker.io rather than Docker's own repository (docker-ce from download.docker.com,
which discourse-setup installs through get.docker.com):

- It comes from the archive every host already trusts and updates: no third-party apt source or
  signing key to pin, and unattended-upgrades installs its fixes with the rest of the system. It
  is security-supported (debian-security-support lists it neither as limited nor as ended); as a
  Go program its fixes arrive through point releases and rebuilds (`+deb12u1+b6`).
- It is recent enough. The launcher accepts Docker >= 17.03.1; the kit asks for >= 20.10
  (versions.yaml) and Debian ships 20.10.24 in bookworm and 26.1 in trixie, for amd64 and arm64
  alike (the Raspberry Pi case). The launcher needs none of docker-ce's newer features.
- One vendor fewer for the most privileged daemon on the host. (download.docker.com was also
  unreachable where this was written, so docker-ce could not have been tested.)

An engine already on the host is kept when it is recent enough: docker-ce conflicts with
docker.io, and replacing a working engine under a running forum would be worse than using it.

AppArmor's tools come too (docker.io recommends them): on a kernel with AppArmor enabled, as
Debian's is by default, the daemon cannot load its container profile without apparmor_parser and
no container starts. The daemon's logs are capped (json-file, 3 x 10 MB; the default never
rotates), and live-restore keeps the forum up while the daemon restarts for an update.
"""

from __future__ import annotations

import re

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import apt, systemd

from commonstack.deploys.configs import changed, put_configs
from commonstack.plan import HostPlan
from commonstack.stacks.version_numbers import numeric
from commonstack.stacks.versions import versions


class DockerEngine(FactBase[dict | None]):
    """The Docker engine on the host, None without one::

    {"version": "20.10.24", "package": "docker.io"}   # package: docker.io, docker-ce or None
    """

    def command(self) -> str:
        return (
            "if command -v docker >/dev/null 2>&1; then docker --version; "
            "dpkg-query -W -f='${Package} ${db:Status-Status}\\n' docker.io docker-ce 2>/dev/null"
            " | awk '$2 == \"installed\" {print \"package\", $1}'; fi; true"
        )

    def process(self, output) -> dict | None:
        text = "\n".join(output)
        found = re.search(r"Docker version (\d+(?:\.\d+)*)", text)
        if not found:
            return None
        packages = re.findall(r"^package (\S+)$", text, re.MULTILINE)
        return {"version": found[1], "package": packages[0] if packages else None}


def minimum_version() -> str:
    return versions().discourse_docker.docker_min_version


def engine_problem(engine: dict | None) -> str | None:
    """Why the engine on the host cannot be used, or None (no engine yet: Debian's is installed)."""
    if engine and numeric(engine["version"]) < numeric(minimum_version()):
        where = f"the {engine['package']} package" if engine["package"] else "an install outside apt"
        return (
            f"Docker {engine['version']} (from {where}) is older than {minimum_version()}: "
            "remove it, and the deploy installs Debian's docker.io"
        )
    return None


def keeps_own_engine(engine: dict | None) -> bool:
    """An engine that is not Debian's docker.io (docker-ce, a static install) is left in place."""
    return bool(engine) and engine.get("package") != "docker.io"


@deploy("Docker engine")
def docker_engine(plan: HostPlan) -> None:
    """Install Debian's docker.io (or keep a recent engine already there), cap its logs, run it.

    Example, in a pyinfra deploy file::

        from commonstack.deploys.docker import docker_engine
        docker_engine(plan)   # plan = commonstack.plan.plan_host(profile, host, secrets, release)
    """
    daemon = put_configs(plan, "docker")  # before the engine first starts: its logs are capped from the start
    own_engine = keeps_own_engine(host.get_fact(DockerEngine))
    # git: the launcher and the checkout of discourse_docker; apparmor: see the module docstring.
    apt.packages(
        name="Install git and AppArmor's tools (keeping the Docker engine already installed)"
        if own_engine
        else "Install Docker (Debian's docker.io), git and AppArmor's tools",
        packages=([] if own_engine else ["docker.io"]) + plan.packages_of(("docker",)),
        no_recommends=True,
    )
    systemd.service(name="Docker running", service="docker", running=True, enabled=True)
    systemd.service(
        name="Restart Docker for the new settings", service="docker", restarted=True, _if=changed(daemon)
    )
