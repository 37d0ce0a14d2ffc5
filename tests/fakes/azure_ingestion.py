"""A fake Azure Monitor Logs Ingestion endpoint: threaded HTTPS on 127.0.0.1 with a trustme certificate.

Implements `POST /dataCollectionRules/{dcr_id}/streams/{stream}?api-version=2023-01-01` the way the
service behaves (../shared/reference/azure-logs-ingestion.md section 1):

- `Authorization: Bearer <token>` must be a token `token_ok` accepts (by default: any non-empty one;
  the fixture wires it to the fake managed identity) -> else 401;
- unknown DCR or stream -> 404 `NotFound`; identity without the role -> 403 `OperationFailed`
  (Azure's message);
- `Content-Length` over 1,048,576 -> 413 `ContentLengthLimitExceeded` (Azure's message); so is an
  uncompressed body over that (`strict_uncompressed`, on by default: the limit applies to both);
- `Content-Encoding: gzip` is gunzipped; the body must be a JSON array of objects -> else 400;
  an empty array -> 500 with no error code, as Azure does;
- 204 with `x-ms-request-id` when accepted; every response carries `x-ms-request-id`, errors carry
  `x-ms-error-code` and an Azure.Core error body.

Error codes other than ContentLengthLimitExceeded / OperationFailed are this fake's own.

Fault injection (all thread-safe): `fail_next(status, times, retry_after=...)` scripts answers,
`drop_next()` closes the connection without an answer, `reject_when(predicate)` refuses (400) any
request holding a matching record (`accept_all()` drops those rules), `deny_role()`, `latency`,
`hold_until(n)` holds requests until n are in flight at once (to observe concurrency
deterministically), `crash()` / `restart()`.

For assertions: `records` (accepted records, in arrival order), `uploads` (one `Upload` per request),
`max_in_flight`. Fixtures: `azure_ca`, `azure_ca_path`, `fake_ingestion` (which needs
`fake_managed_identity` too); make them visible in a conftest with

    from tests.fakes.azure_ingestion import azure_ca, azure_ca_path, fake_ingestion, fake_managed_identity

Outside pytest (benchmarks, subprocess tests): `with FakeManagedIdentity() as mi, FakeLogsIngestion(
token_ok=mi.token_ok) as fake:`, then give the connector `mi.env()` plus `REQUESTS_CA_BUNDLE=fake.ca_path`
(requests, under azure-core, reads it when no CA bundle is configured), `--dce fake.endpoint` and
`--dcr-id fake.dcr_id`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import secrets
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from tests.fakes.azure_identity import FakeManagedIdentity, fake_managed_identity

__all__ = [
    "API_VERSION",
    "HISTORY_STREAM",
    "MAX_BODY",
    "STREAM",
    "FakeLogsIngestion",
    "Upload",
    "azure_ca",
    "azure_ca_path",
    "fake_ingestion",
    "fake_managed_identity",
    "new_dcr_id",
]

API_VERSION = "2023-01-01"
MAX_BODY = 1_048_576
STREAM = "Custom-OnePasswordEventLogs_CL"
HISTORY_STREAM = "Custom-OnePasswordEventLogsHistory_CL"
_MARKER = "/dataCollectionRules/"


def new_dcr_id() -> str:
    return "dcr-" + secrets.token_hex(16)


@dataclass(frozen=True)
class Upload:
    """One request the fake answered."""

    dcr_id: str
    stream: str
    status: int
    content_length: int
    content_encoding: str | None
    uncompressed_size: int | None
    records: int
    request_id: str
    error_code: str | None


@dataclass
class _Scripted:
    status: int
    code: str | None
    message: str
    retry_after: str | None
    drop: bool = False


@dataclass
class _Rejection:
    predicate: Callable[[dict[str, Any]], bool]
    status: int
    code: str
    message: str


@dataclass
class _State:
    records: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    script: list[_Scripted] = field(default_factory=list)
    rejections: list[_Rejection] = field(default_factory=list)
    by_stream: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0


class _Server(ThreadingHTTPServer):
    """TLS per connection in the worker thread (a slow or failed handshake never blocks accept)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], ctx: ssl.SSLContext):
        self.ssl_context = ctx
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # e.g. the client did not trust our certificate
        with self.connections_lock:
            self.connections.add(tls)
        try:
            super().finish_request(tls, client_address)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with self.connections_lock:
                self.connections.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def close_connections(self) -> None:
        with self.connections_lock:
            open_ = list(self.connections)
        for sock in open_:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class FakeLogsIngestion:
    """See the module docstring. `dcrs` maps DCR immutable ids to their stream names."""

    def __init__(
        self,
        ca: trustme.CA | None = None,
        ca_path: str | None = None,
        *,
        token_ok: Callable[[str], bool] | None = None,
        dcr_id: str | None = None,
        stream: str = STREAM,
        strict_uncompressed: bool = True,
    ) -> None:
        """`ca` signs the server certificate and `ca_path` holds its PEM (both made up when omitted)."""
        if ca is None:
            ca = trustme.CA()
        if ca_path is None:
            ca_path = str(Path(tempfile.mkdtemp(prefix="fake-azure-ca-")) / "ca.pem")
            ca.cert_pem.write_to_path(ca_path)
        self.ca_path = ca_path
        self.dcr_id = dcr_id or new_dcr_id()
        self.stream = stream
        # The DCR from `op-sentinel azure template` declares the history stream beside the main one.
        self.dcrs: dict[str, set[str]] = {self.dcr_id: {stream, HISTORY_STREAM}}
        self.token_ok = token_ok or (lambda token: bool(token))
        self.strict_uncompressed = strict_uncompressed
        self.role_granted = True
        self.latency = 0.0
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ctx)
        self._state = _State()
        self._lock = threading.Condition()
        self._hold: int | None = None
        self._hold_timeout = 0.0
        self._server: _Server | None = None
        self._port = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeLogsIngestion:
        server = _Server(("127.0.0.1", self._port), _handler(self), self._ctx)
        self._port = server.server_address[1]
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-ingestion", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (a crash, as seen by clients)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()

    crash = stop

    def restart(self) -> FakeLogsIngestion:
        """Listen again on the same port; accepted records are kept."""
        self.stop()
        return self.start()

    def __enter__(self) -> FakeLogsIngestion:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    # --- fault injection ------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: str | float | None = None,
        code: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """Answer the next `times` authenticated requests with `status` (and Retry-After, if given)."""
        ra = None if retry_after is None else str(retry_after)
        with self._lock:
            self._state.script.extend(_Scripted(status, code, message, ra) for _ in range(times))

    def drop_next(self, times: int = 1) -> None:
        """Read the next `times` requests, then close the connection without answering."""
        with self._lock:
            self._state.script.extend(_Scripted(0, None, "", None, drop=True) for _ in range(times))

    def reject_when(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        status: int = 400,
        code: str = "InvalidPayload",
        message: str = "The request contains a record that cannot be ingested.",
    ) -> None:
        """Refuse every request holding a record for which `predicate` is true (nothing is stored)."""
        with self._lock:
            self._state.rejections.append(_Rejection(predicate, status, code, message))

    def accept_all(self) -> None:
        """Drop every `reject_when` rule: the cause of the refusals is fixed."""
        with self._lock:
            self._state.rejections.clear()

    def deny_role(self) -> None:
        self.role_granted = False

    def hold_until(self, in_flight: int, timeout: float = 5.0) -> None:
        """Hold each request until `in_flight` are being served at once (or `timeout` passes), once."""
        with self._lock:
            self._hold = in_flight
            self._hold_timeout = timeout

    # --- what was received ----------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._state.records)

    def records_of(self, stream: str) -> list[dict[str, Any]]:
        """Accepted records of one DCR stream (`records` holds those of every stream)."""
        with self._lock:
            return list(self._state.by_stream.get(stream, []))

    @property
    def uploads(self) -> list[Upload]:
        with self._lock:
            return list(self._state.uploads)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._state.max_in_flight

    # --- request handling (called from handler threads) -----------------------------------------

    def _enter(self) -> None:
        with self._lock:
            self._state.in_flight += 1
            self._state.max_in_flight = max(self._state.max_in_flight, self._state.in_flight)
            self._lock.notify_all()
            if self._hold is not None:
                target = self._hold
                self._lock.wait_for(
                    lambda: self._hold is None or self._state.in_flight >= target, self._hold_timeout
                )
                self._hold = None  # hold once: later requests pass straight through
                self._lock.notify_all()

    def _leave(self) -> None:
        with self._lock:
            self._state.in_flight -= 1

    def _next_scripted(self) -> _Scripted | None:
        with self._lock:
            return self._state.script.pop(0) if self._state.script else None

    def _record(self, upload: Upload, records: list[dict[str, Any]] | None) -> None:
        with self._lock:
            self._state.uploads.append(upload)
            if records:
                self._state.records.extend(records)
                self._state.by_stream.setdefault(upload.stream, []).extend(records)

    def _rejection_for(self, records: list[dict[str, Any]]) -> _Rejection | None:
        with self._lock:
            rejections = list(self._state.rejections)
        for rejection in rejections:
            if any(rejection.predicate(r) for r in records):
                return rejection
        return None


class _Answer(Exception):
    def __init__(
        self,
        status: int,
        code: str | None = None,
        message: str = "",
        *,
        retry_after: str | None = None,
        drop: bool = False,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.drop = drop


def _handler(fake: FakeLogsIngestion) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            encoding = self.headers.get("Content-Encoding")
            request_id = str(uuid.uuid4())
            dcr_id, stream = "", ""
            fake._enter()
            try:
                if fake.latency:
                    time.sleep(fake.latency)
                dcr_id, stream = self._route()
                records = self._accept(raw, length, encoding, dcr_id, stream)
            except _Answer as answer:
                if answer.drop:
                    fake._leave()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                size = _uncompressed_size(raw, encoding)
                fake._record(
                    Upload(dcr_id, stream, answer.status, length, encoding, size, 0, request_id, answer.code),
                    None,
                )
                fake._leave()  # before answering: a client never sees a stale in-flight count
                self._error(answer, request_id)
                return
            fake._record(
                Upload(
                    dcr_id,
                    stream,
                    204,
                    length,
                    encoding,
                    _uncompressed_size(raw, encoding),
                    len(records),
                    request_id,
                    None,
                ),
                records,
            )
            fake._leave()
            self.send_response(204)
            self.send_header("x-ms-request-id", request_id)
            self.end_headers()

        def do_GET(self) -> None:
            self._error(_Answer(404, "NotFound", "No such resource."), str(uuid.uuid4()))

        def _route(self) -> tuple[str, str]:
            url = urlsplit(self.path)
            parts = url.path.split("/")
            # ['', 'dataCollectionRules', dcr, 'streams', stream]
            if len(parts) != 5 or parts[1] != "dataCollectionRules" or parts[3] != "streams":
                raise _Answer(404, "NotFound", "No such resource.")
            if parse_qs(url.query).get("api-version") != [API_VERSION]:
                raise _Answer(400, "UnsupportedApiVersion", f"Use api-version={API_VERSION}.")
            return parts[2], parts[4]

        def _accept(
            self, raw: bytes, length: int, encoding: str | None, dcr_id: str, stream: str
        ) -> list[dict[str, Any]]:
            auth = self.headers.get("Authorization") or ""
            if not auth.startswith("Bearer ") or not fake.token_ok(auth[len("Bearer ") :]):
                raise _Answer(401, "InvalidAuthenticationToken", "The access token is missing or invalid.")
            scripted = fake._next_scripted()
            if scripted is not None:
                raise _Answer(
                    scripted.status,
                    scripted.code,
                    scripted.message,
                    retry_after=scripted.retry_after,
                    drop=scripted.drop,
                )
            if stream not in fake.dcrs.get(dcr_id, set()):
                raise _Answer(404, "NotFound", f"Data collection rule '{dcr_id}' or stream not found.")
            if not fake.role_granted:
                raise _Answer(
                    403,
                    "OperationFailed",
                    "The authentication token provided does not have access to ingest data for the data "
                    f"collection rule with immutable Id '{dcr_id}' PipelineAccessResult: AccessGranted: "
                    "False, IsRbacPresent: False, IsDcrDceBindingValid: , DcrArmId: , Message: .",
                )
            if length > MAX_BODY:
                raise _too_large(length)
            body = raw
            if encoding == "gzip":
                try:
                    body = gzip.decompress(raw)
                except (OSError, EOFError) as exc:
                    raise _Answer(400, "InvalidContentEncoding", "The body is not valid gzip.") from exc
            elif encoding:
                raise _Answer(400, "InvalidContentEncoding", "Only gzip is supported.")
            if fake.strict_uncompressed and len(body) > MAX_BODY:
                raise _too_large(len(body))
            try:
                records = json.loads(body)
            except ValueError as exc:
                raise _Answer(400, "InvalidPayload", "The body is not valid JSON.") from exc
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise _Answer(400, "InvalidPayload", "The body must be a JSON array of objects.")
            if not records:
                raise _Answer(500, None, "Service request failed.")
            rejection = fake._rejection_for(records)
            if rejection is not None:
                raise _Answer(rejection.status, rejection.code, rejection.message)
            return records

        def _error(self, answer: _Answer, request_id: str) -> None:
            payload: dict[str, Any] = {"error": {"code": answer.code or "", "message": answer.message}}
            body = json.dumps(payload).encode() if answer.code else b""
            self.send_response(answer.status)
            self.send_header("x-ms-request-id", request_id)
            if answer.code:
                self.send_header("x-ms-error-code", answer.code)
                self.send_header("Content-Type", "application/json")
            if answer.retry_after is not None:
                self.send_header("Retry-After", answer.retry_after)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _too_large(size: int) -> _Answer:
    return _Answer(
        413,
        "ContentLengthLimitExceeded",
        f"Maximum allowed content length: {MAX_BODY} bytes (1 MB). Provided content length: {size} bytes.",
    )


def _uncompressed_size(raw: bytes, encoding: str | None) -> int | None:
    if encoding != "gzip":
        return len(raw)
    try:
        return len(gzip.decompress(raw))
    except (OSError, EOFError):
        return None


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azure_ca() -> trustme.CA:
    """A throwaway certificate authority for local HTTPS fakes."""
    return trustme.CA()


@pytest.fixture(scope="session")
def azure_ca_path(azure_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`azure_ca`'s certificate as a PEM file: pass it as `connection_verify`."""
    path = Path(tmp_path_factory.mktemp("azure-ca")) / "ca.pem"
    azure_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def fake_ingestion(
    azure_ca: trustme.CA,
    azure_ca_path: str,
    fake_managed_identity: FakeManagedIdentity,
) -> Iterator[FakeLogsIngestion]:
    """A running FakeLogsIngestion that accepts only tokens the fake managed identity issued."""
    with FakeLogsIngestion(azure_ca, azure_ca_path, token_ok=fake_managed_identity.token_ok) as fake:
        yield fake
