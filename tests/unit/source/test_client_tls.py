"""EventsClient against a real local HTTPS server (trustme certificates) and a closed port."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from opsentinel.errors import UserError
from opsentinel.source.client import EventsClient
from opsentinel.source.retry import RetryPolicy
from opsentinel.source.token import ApiToken
from opsentinel.streams import get_stream

pytestmark = pytest.mark.anyio


@dataclass
class Seen:
    auth: list[str] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)


@dataclass
class TlsServer:
    base_url: str
    ca: trustme.CA
    seen: Seen


@pytest.fixture
def tls_server() -> Iterator[TlsServer]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def _reply(self, body: dict[str, Any]) -> None:
            seen.auth.append(self.headers.get("Authorization", ""))
            seen.client_ports.append(self.client_address[1])
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply({"uuid": "I", "features": ["auditevents"], "account_uuid": "A"})

        def do_POST(self) -> None:
            seen.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self._reply({"cursor": f"c{len(seen.bodies)}", "has_more": False, "items": []})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield TlsServer(f"https://127.0.0.1:{server.server_address[1]}", ca, seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def no_wait(seconds: float) -> None:
    return None


async def test_verified_tls_with_keep_alive(
    tls_server: TlsServer, tmp_path: Path, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    ca_file = tmp_path / "ca.pem"
    tls_server.ca.cert_pem.write_to_path(str(ca_file))
    caplog.set_level(logging.DEBUG)
    async with EventsClient(tls_server.base_url, ApiToken(secret), verify=str(ca_file)) as client:
        info = await client.introspect()
        spec = get_stream("auditevents")
        first = await client.fetch_page(spec, {"limit": 1000, "start_time": "2026-11-18T12:00:00Z"})
        second = await client.fetch_page(spec, {"cursor": first.cursor})
    assert info.features == ["auditevents"]
    assert second.cursor == "c2"
    assert tls_server.seen.bodies[1] == {"cursor": "c1"}
    assert tls_server.seen.auth == [f"Bearer {secret}"] * 3
    assert len(set(tls_server.seen.client_ports)) == 1  # one kept-alive connection
    assert secret not in caplog.text


async def test_ssl_context_is_accepted_for_verify(tls_server: TlsServer, token: ApiToken) -> None:
    context = ssl.create_default_context()
    tls_server.ca.configure_trust(context)
    async with EventsClient(tls_server.base_url, token, verify=context) as client:
        assert (await client.introspect()).uuid == "I"


async def test_untrusted_certificate_fails_fast_with_one_line(tls_server: TlsServer, token: ApiToken) -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async with EventsClient(tls_server.base_url, token, sleep=record) as client:
        with pytest.raises(UserError) as info:
            await client.introspect()
    message = str(info.value)
    assert message.startswith(
        f"cannot reach the Events API at {tls_server.base_url.removeprefix('https://')}"
    )
    assert "TLS certificate verification failed" in message
    assert sleeps == []  # a bad certificate is not retried
    assert tls_server.seen.auth == []  # nothing was sent over the unverified connection


async def test_closed_port_is_one_user_line(token: ApiToken) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(max_attempts=2, base_delay=0.0, jitter=False)
    async with EventsClient(f"http://127.0.0.1:{port}", token, startup_retry=policy, sleep=no_wait) as client:
        with pytest.raises(UserError) as info:
            await client.introspect()
    assert str(info.value) == (
        f"cannot reach the Events API at 127.0.0.1:{port}: connection refused after 2 attempts"
    )
