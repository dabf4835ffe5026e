"""A real Matrix client (matrix-nio) for the integration tests: names resolved to test hosts only,
a login as found through .well-known, and waiting for a message."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import aiohttp
import nio


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
