"""The simulator over real HTTP/1.1 (keep-alive) on a loopback socket, usable as a test fixture.

    with SimulatorServer(SimulatorConfig(events=500)) as sim:
        auth = {"Authorization": f"Bearer {sim.token}"}
        httpx.post(f"{sim.base_url}/api/v2/auditevents", json={}, headers=auth)

One thread per connection (stdlib `ThreadingHTTPServer`), so a delayed or stalled request never holds
up another. The handler is a thin transport over `SimulatorApp`: it reads the request, asks the app,
and carries out what the response asks for, including the byte-level faults (truncated or stalled
body, TCP reset). `stop()` interrupts delays and stalls, closes every connection and joins the threads.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from opsentinel.simulator.app import Delivery, Request, RequestRecord, Response, SimulatorApp
from opsentinel.simulator.config import SimulatorConfig
from opsentinel.simulator.faults import FaultPlan
from opsentinel.simulator.rfc3339 import NS

log = logging.getLogger("opsentinel.simulator")

MAX_BODY = 1 << 20  # request bodies are tiny JSON objects; refuse anything past 1 MiB
IDLE_TIMEOUT = 120.0  # seconds an idle keep-alive connection is kept


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True  # server_close() joins the connection threads
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: SimulatorApp, stopping: threading.Event) -> None:
        self.app = app
        self.stopping = stopping
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.verbose = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection (a cancelled request, Ctrl-C) is normal, not a crash:
        log it at debug instead of printing socketserver's traceback."""
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "op-sentinel-simulator"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall
    server: _HTTPServer

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self._send_plain(400, str(exc))
            self.close_connection = True
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.app.handle(Request(self.command, self.path, headers, body))
        if response.delay > 0 and self.server.stopping.wait(response.delay):
            self.close_connection = True
            return
        if self.server.verbose:
            log.info("%s %s -> %s%s", self.command, self.path.split("?")[0], response.status,
                     f" ({response.fault})" if response.fault else "")  # fmt: skip
        self._deliver(response)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        try:
            size = int(length)
        except ValueError as exc:
            raise ValueError("bad Content-Length") from exc
        if size < 0 or size > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(size) if size else b""

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError as exc:
                raise ValueError("bad chunked encoding") from exc
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(data)
            if len(data) + size > MAX_BODY:
                raise ValueError("request body too large")
            data += self.rfile.read(size)
            self.rfile.readline(1024)

    def _deliver(self, response: Response) -> None:
        if response.delivery is Delivery.RESET:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        body = response.body
        declared = len(body)
        if response.delivery is Delivery.TRUNCATE:
            body = body[: len(body) // 2]
            declared = len(body)
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.delivery is Delivery.STALL:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.server.stopping.wait(response.stall_seconds)
            self.close_connection = True
            return
        self.wfile.write(body)

    def _send_plain(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded by the app; `verbose` logs them through `logging`

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header from the simulator's clock (which tests may fake or skew), as a real
        server's own clock would give it."""
        if timestamp is None:
            timestamp = self.server.app.clock() / NS
        return super().date_time_string(timestamp)


class SimulatorServer:
    """A running simulator: the app plus its socket. Context manager; thread-safe.

    Attributes once started: `base_url` (`http://127.0.0.1:PORT`), `token` (all configured features),
    `faults` (the live `FaultPlan`), `app` (the core, for anything not wrapped here).
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        base = config or SimulatorConfig()
        if overrides:
            base = replace(base, **overrides)
        self.config = base
        self.app = SimulatorApp(base)
        self.faults: FaultPlan = self.app.faults
        self.token = self.app.issue_token(features=base.features)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "running" if self._httpd is not None else "stopped"
        return f"<SimulatorServer {state} {self.base_url if self._httpd else ''}>".replace(" >", ">")

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, *, verbose: bool = False) -> Self:
        """Bind and serve in a background thread. OSError if the address cannot be bound."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.config.host, self.config.port), self.app, self._stopping)
        httpd.verbose = verbose
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="simulator-accept", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end delays and stalls, close connections, join threads. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("simulator is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # -- test helpers (thin wrappers over the app) ----------------------------------------------------

    @property
    def account_uuid(self) -> str:
        return self.app.account_uuid

    @property
    def request_log(self) -> list[RequestRecord]:
        """Recent requests (method, path, status, fault, cursor, at_ns), oldest first; bounded."""
        return self.app.request_log

    def clear_request_log(self) -> None:
        self.app.clear_request_log()

    def issue_token(self, **kwargs: Any) -> str:
        """A token; keyword arguments as `TokenAuthority.issue` (features, audience, account, ...)."""
        return self.app.issue_token(**kwargs)

    def add_events(self, stream: str, n: int = 1, *, at: datetime | None = None) -> list[dict[str, Any]]:
        """Append `n` events (now, or late at `at`) and return them as V2 serves them."""
        return self.app.add_events(stream, n, at=at)

    def events(self, stream: str, *, version: int = 2) -> Iterator[dict[str, Any]]:
        """Every event of `stream` present now, in chain order, as the V1 or V2 endpoint serves it."""
        return self.app.events(stream, version=version)

    def event_count(self, stream: str) -> int:
        return self.app.logs[stream].total()
