"""The one place where azure-core / azure-identity exceptions are read and turned into our terms.

`classify(exc)` reduces whatever `LogsIngestionClient.upload` or a credential raised to a `Failure`:
what kind of problem it is, the HTTP status, Azure's error code and message (short, one line), the
request id and any Retry-After. The sink decides what to do per kind; the `*_message` helpers build
the one-line texts users see. Nothing here ever reads a request body or a token.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

from opsentinel.source.retry import parse_retry_after

__all__ = [
    "MONITORING_METRICS_PUBLISHER",
    "Failure",
    "FailureKind",
    "classify",
    "credential_message",
    "forbidden_message",
    "not_found_message",
    "tls_message",
    "unauthorized_message",
    "unreachable_message",
]

# Built-in role that may upload to a DCR.
MONITORING_METRICS_PUBLISHER: Final = "3913510d-42f4-4e42-8a64-420c390055eb"

_MAX_TEXT = 240


class FailureKind(Enum):
    REJECTED = "rejected"  # 400/413: the payload; split it, dead-letter what stays refused
    THROTTLED = "throttled"  # 429
    TRANSIENT = "transient"  # 408, 5xx
    UNAUTHORIZED = "unauthorized"  # 401: Azure did not accept the token
    FORBIDDEN = "forbidden"  # 403: the identity lacks the role on the DCR
    NOT_FOUND = "not_found"  # 404: no such DCR or stream at this endpoint
    OTHER_STATUS = "other_status"  # any other HTTP status
    CREDENTIAL = "credential"  # no token could be obtained
    TLS = "tls"  # the endpoint's certificate was not trusted (waiting cannot fix that)
    UNREACHABLE = "unreachable"  # DNS, refused, reset, timed out


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    status: int | None = None
    code: str | None = None
    message: str | None = None
    request_id: str | None = None
    retry_after: float | None = None
    detail: str = ""

    def describe(self) -> str:
        """`403 OperationFailed: <Azure message>` or the transport detail; one line, no body."""
        if self.status is None:
            return self.detail
        text = str(self.status)
        if self.code:
            text += f" {self.code}"
        if self.message:
            text += f": {self.message}"
        return text


def _one_line(text: str | None) -> str | None:
    if not text:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_TEXT else flat[: _MAX_TEXT - 3] + "..."


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps (cause, context, azure's inner_exception, urllib3's reason)."""
    seen: set[int] = set()
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        linked = [
            current.__cause__,
            current.__context__,
            getattr(current, "inner_exception", None),
            getattr(current, "reason", None),
            *current.args,
        ]
        todo.extend(x for x in linked if isinstance(x, BaseException))
    return out


def _transport_detail(exc: BaseException) -> tuple[FailureKind, str]:
    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return FailureKind.TLS, _one_line(cause.verify_message or str(cause)) or "untrusted certificate"
    for cause in causes:  # EOF mid-handshake and the like: the server, not its certificate
        if isinstance(cause, ssl.SSLError):
            reason = _one_line(cause.reason or str(cause)) or "handshake failed"
            return FailureKind.UNREACHABLE, f"TLS connection failed: {reason}"
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return FailureKind.UNREACHABLE, "host name not found"
        if isinstance(cause, ConnectionRefusedError):
            return FailureKind.UNREACHABLE, "connection refused"
    for cause in causes:
        if isinstance(cause, ServiceRequestTimeoutError | ServiceResponseTimeoutError | TimeoutError):
            return FailureKind.UNREACHABLE, "timed out"
        if isinstance(cause, ConnectionResetError):
            return FailureKind.UNREACHABLE, "connection reset"
    text = str(exc).lower()
    if "timed out" in text or "timeout" in text:
        return FailureKind.UNREACHABLE, "timed out"
    if "remote end closed" in text or "aborted" in text or "reset" in text:
        return FailureKind.UNREACHABLE, "connection closed by the server"
    return FailureKind.UNREACHABLE, "connection failed"


def _status_kind(status: int) -> FailureKind:
    if status in (400, 413):
        return FailureKind.REJECTED
    if status == 429:
        return FailureKind.THROTTLED
    if status == 408 or status >= 500:
        return FailureKind.TRANSIENT
    if status == 401:
        return FailureKind.UNAUTHORIZED
    if status == 403:
        return FailureKind.FORBIDDEN
    if status == 404:
        return FailureKind.NOT_FOUND
    return FailureKind.OTHER_STATUS


def _retry_after(headers: dict[str, str]) -> float | None:
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value is not None:
            try:
                return max(float(value) / 1000.0, 0.0)
            except ValueError:
                pass
    return parse_retry_after(headers.get("retry-after"))


def classify(exc: BaseException) -> Failure | None:
    """What `exc` means for an upload, or None when it is not an Azure/transport error we know."""
    response: Any = exc.response if isinstance(exc, HttpResponseError) else None
    if response is not None and isinstance(response.status_code, int):
        status: int = response.status_code
        headers = {str(k).lower(): str(v) for k, v in response.headers.items()}
        error = getattr(exc, "error", None)
        code = headers.get("x-ms-error-code") or getattr(error, "code", None)
        message = getattr(error, "message", None)
        return Failure(
            kind=_status_kind(status),
            status=status,
            code=_one_line(code),
            message=_one_line(message),
            request_id=headers.get("x-ms-request-id"),
            retry_after=_retry_after(headers),
        )
    if isinstance(exc, ClientAuthenticationError):
        # No response: the credential raised before any request went out.
        return Failure(FailureKind.CREDENTIAL, detail=credential_message(exc))
    if isinstance(exc, ServiceRequestError | ServiceResponseError | HttpResponseError):
        kind, detail = _transport_detail(exc)
        return Failure(kind, detail=detail)
    return None


_ATTEMPT = re.compile(r"^\s*([A-Za-z]+Credential)\s*:\s*(.*)$")

# Last-resort credentials whose "not installed" message would hide the useful one before them.
_FALLBACKS: Final = frozenset({"BrokerCredential", "InteractiveBrowserCredential"})

_CREDENTIAL_FIX: Final = (
    "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal, "
    "run on a host with a managed identity, or sign in with `az login`"
)


def credential_message(exc: BaseException) -> str:
    """One line: no Azure token, which credential sources were tried, and how to provide one."""
    text = str(getattr(exc, "message", None) or exc)
    tried: list[str] = []
    last = ""
    for line in text.splitlines():
        m = _ATTEMPT.match(line)
        if m:
            tried.append(m.group(1))
            if m.group(1) not in _FALLBACKS:
                last = m.group(2)
    if not tried:
        tried.append(type(exc).__name__)
        last = text.splitlines()[0] if text else ""
    reason = _one_line(last)
    why = f"; last: {reason}" if reason else ""
    return f"could not get an Azure token (tried {', '.join(tried)}{why}): {_CREDENTIAL_FIX}"


def unauthorized_message(endpoint: str, failure: Failure) -> str:
    return (
        f"Azure rejected the access token ({failure.describe()}) at {endpoint}: use an identity of the "
        "tenant and cloud the endpoint belongs to (AZURE_TENANT_ID, the --dce host)"
    )


def forbidden_message(dcr_id: str, failure: Failure) -> str:
    code = f" {failure.code}" if failure.code else ""
    return (
        f"Azure refused the upload ({failure.status}{code}): grant the identity the "
        f"'Monitoring Metrics Publisher' role on the DCR {dcr_id} "
        "(role changes can take up to 30 minutes)"
    )


def not_found_message(
    endpoint: str, dcr_id: str, stream: str, failure: Failure, *, history: bool = False
) -> str:
    code = f" {failure.code}" if failure.code else ""
    if history:
        return (
            f"the DCR {dcr_id} at {endpoint} has no stream {stream} for a first run's history "
            f"({failure.status}{code}): deploy the DCR from `op-sentinel azure template` (it declares "
            "that stream and the history table), or pass --history-stream none to send no history"
        )
    return (
        f"no DCR {dcr_id} / stream {stream} at {endpoint} ({failure.status}{code}): check --dcr-id "
        "(the DCR's immutable id) and --stream, and that --dce is the DCE linked to that DCR or the "
        "DCR's own logs ingestion endpoint"
    )


def tls_message(endpoint: str, failure: Failure) -> str:
    return (
        f"TLS verification failed for the Logs Ingestion endpoint {endpoint} ({failure.detail}): "
        "check the --dce URL"
    )


def unreachable_message(endpoint: str, failure: Failure) -> str:
    return (
        f"cannot reach the Logs Ingestion endpoint {endpoint} ({failure.detail}): check the --dce URL "
        "and this host's network access to it"
    )
