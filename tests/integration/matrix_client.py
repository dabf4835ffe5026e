"""A real Matrix client (matrix-nio) for the integration tests, against test hosts with no DNS
and no public CA: names resolve only to the test hosts (`StaticResolver`: nothing else on this
machine changes), and each host's Caddy root (tls.mode internal) is trusted. Shared by
test_matrix.py, test_upgrade_synapse.py and test_backup_matrix.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from commonstack.testhosts import TestHost

nio = pytest.importorskip("nio", reason="matrix-nio is a test dependency (pip install matrix-nio)")
aiohttp = pytest.importorskip("aiohttp")

CADDY_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"


@dataclass
class Homeserver:
    group: str
    domain: str
    testhost: TestHost
    inventories: Path
    deploy_seconds: float = 0.0
    caddy_root: str = ""

    @property
    def server_name(self) -> str:
        return self.domain

    @property
    def hostname(self) -> str:
        return f"matrix.{self.domain}"

    @property
    def admin(self) -> str:
        return f"@admin:{self.domain}"

    def admin_password(self) -> str:
        secrets = yaml.safe_load((self.inventories / self.group / "secrets.yaml").read_text())
        return secrets["matrix_admin_password"]


class StaticResolver(aiohttp.abc.AbstractResolver):
    """Resolves only the given names (to their test hosts); anything else is an error."""

    def __init__(self, names: dict[str, str]):
        self.names = names

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        if host not in self.names:
            raise OSError(f"{host} is not a test host's name")
        return [{"hostname": host, "host": self.names[host], "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


async def logged_in(server: Homeserver, user: str | None = None, password: str | None = None) -> nio.AsyncClient:
    """A matrix-nio client of the admin (or of `user`), found as a client finds it: through .well-known."""
    client = await client_of(server.server_name, server.hostname, server.testhost.address, server.caddy_root,
                             user or server.admin, password or server.admin_password())  # fmt: skip
    assert client.homeserver == f"https://{server.hostname}", client.homeserver
    return client


async def client_of(server_name: str, hostname: str, address: str, caddy_root: str, user_id: str,
                    password: str) -> nio.AsyncClient:
    """A logged-in client of `user_id`, which finds its homeserver through .well-known."""
    client = nio.AsyncClient(f"https://{server_name}", user_id, ssl=ssl.create_default_context(cadata=caddy_root))
    client.client_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=StaticResolver({server_name: address, hostname: address})),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    discovery = await client.discovery_info()
    assert isinstance(discovery, nio.DiscoveryInfoResponse), discovery
    client.homeserver = discovery.homeserver_url.rstrip("/")
    response = await client.login(password, device_name="commonstack integration test")
    assert isinstance(response, nio.LoginResponse), response
    return client


async def wait_for_message(client: nio.AsyncClient, room_id: str, body: str, timeout: float = 90) -> float:
    """Seconds until `body` is in the room's timeline as `client` sees it."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        response = await client.room_messages(room_id, limit=20)
        if isinstance(response, nio.RoomMessagesResponse) and any(
            getattr(event, "body", None) == body for event in response.chunk
        ):
            return time.monotonic() - started
        await asyncio.sleep(1)
    raise AssertionError(f"{body!r} did not arrive in {room_id} for {client.user_id} within {timeout} s")


