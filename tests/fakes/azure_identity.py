"""A fake Azure App Service managed-identity endpoint, the one azure-identity reaches via
`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`.

azure-identity 1.27 `ManagedIdentityCredential` picks `AppServiceCredential` when both variables are set
(and `IDENTITY_SERVER_THUMBPRINT` is not), which uses MSAL's `_obtain_token_on_app_service`:

    GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<scope minus /.default>[&client_id=...]
    X-IDENTITY-HEADER: {IDENTITY_HEADER}
    -> 200 {"access_token", "expires_on" (epoch seconds), "resource", "token_type"}

Any answer without `access_token` makes the credential "unavailable" (so a DefaultAzureCredential chain
moves on). Tokens issued here are remembered, so the fake Logs Ingestion endpoint can check them.

Use the `fake_managed_identity` fixture (it sets the variables with monkeypatch and clears every other
Azure credential variable, so DefaultAzureCredential settles on this endpoint), or `FakeManagedIdentity`
as a context manager with `.env()` for a subprocess.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = ["AZURE_CREDENTIAL_ENV_VARS", "FakeManagedIdentity", "fake_managed_identity"]

# Variables azure-identity reads to choose a credential; the fixture clears them all.
AZURE_CREDENTIAL_ENV_VARS = (
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)

TOKEN_PATH = "/msi/token"


class FakeManagedIdentity:
    """Threaded HTTP server on 127.0.0.1 issuing random bearer tokens (1 hour) for any resource.

    `fail = True` makes it answer 400 `{"statusCode", "message"}` (the credential becomes unavailable).
    `issued` maps each token to its resource; `requests` counts token requests.
    """

    def __init__(self, *, lifetime: int = 3600) -> None:
        self.secret = secrets.token_hex(16)
        self.lifetime = lifetime
        self.fail = False
        self.issued: dict[str, str] = {}
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeManagedIdentity:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-msi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeManagedIdentity:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}{TOKEN_PATH}"

    def env(self) -> dict[str, str]:
        """The variables that point azure-identity at this endpoint."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    # --- tokens ---------------------------------------------------------------------------------

    def token_ok(self, token: str, resource: str = "https://monitor.azure.com") -> bool:
        """True when this fake issued `token` for `resource` (and it was not revoked)."""
        with self._lock:
            return self.issued.get(token) == resource

    def revoke_all(self) -> None:
        """Forget every issued token: clients holding one now get 401 from the ingestion fake."""
        with self._lock:
            self.issued.clear()

    def _issue(self, resource: str) -> dict[str, Any]:
        token = "fake-" + secrets.token_urlsafe(24)
        with self._lock:
            self.issued[token] = resource
        return {
            "access_token": token,
            "expires_on": str(int(time.time()) + self.lifetime),
            "resource": resource,
            "token_type": "Bearer",
        }


def _handler(fake: FakeManagedIdentity) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with fake._lock:
                fake.requests += 1
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != TOKEN_PATH:
                return self._reply(404, {"statusCode": 404, "message": "not found"})
            if self.headers.get("X-IDENTITY-HEADER") != fake.secret:
                return self._reply(401, {"statusCode": 401, "message": "bad X-IDENTITY-HEADER"})
            if query.get("api-version") != "2019-08-01" or not query.get("resource"):
                return self._reply(400, {"statusCode": 400, "message": "bad request"})
            if fake.fail:
                return self._reply(400, {"statusCode": 400, "message": "fake identity endpoint failure"})
            return self._reply(200, fake._issue(query["resource"]))

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def fake_managed_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManagedIdentity]:
    """A running FakeManagedIdentity, with the environment pointing azure-identity at it."""
    for name in AZURE_CREDENTIAL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with FakeManagedIdentity() as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        yield fake
