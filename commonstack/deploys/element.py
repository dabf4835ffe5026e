"""Element Web, the optional browser client: refused, with its reason, until a release is pinned.

Element Web is a static app published as a tarball on github.com. The kit installs only what it can
verify, and versions.yaml pins no sha256 for Element yet (github.com could not be reached when the
versions were pinned): the preflight refuses the layer before anything changes. `try` deploys the
rest and says why Element was left out; `deploy` fails the host with that line, so the volunteer
chooses: `matrix.element.enabled: false`, or any Matrix client (Element desktop or mobile) meanwhile.
"""

from __future__ import annotations

from pyinfra.api import deploy

from commonstack.deploys.preflight import SourceUnavailable
from commonstack.rendering import HostPlan, versions


def unavailable_reason(homeserver: str) -> str:
    """Why this version of the kit does not install Element Web, in one line."""
    release = versions()["element"]
    if release.get("sha256"):
        problem = "this version of the kit has no installer for it yet"
    else:
        problem = f"versions.yaml pins no sha256 for {release['url']}, so the download could not be verified"
    return (
        f"Element Web {release['version']} is not installed: {problem} (set matrix.element.enabled: false "
        f"to deploy without it; any Matrix client, e.g. Element desktop or mobile, works with {homeserver})"
    )


def element_preflight(plan: HostPlan) -> None:
    """Refuse the layer before any change: nothing of Element is ever half-installed."""
    raise SourceUnavailable("element", unavailable_reason(f"https://{plan.profile.hostnames()['matrix']}"))


@deploy("Element Web")
def element(plan: HostPlan) -> None:
    """Element Web for matrix.element.hostname (Caddy already serves /var/www/element)."""
    element_preflight(plan)
