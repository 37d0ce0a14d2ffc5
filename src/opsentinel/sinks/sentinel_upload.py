"""One Logs Ingestion request, retried by our policy: the layer between the sink and the Azure SDK.

`Uploader.post(body)` sends one pre-gzipped JSON array through `LogsIngestionClient.upload` (the SDK
sends an IO stream as-is and, seeing the gzip magic bytes, sets `Content-Encoding: gzip`). The SDK's
own retries are switched off (they skip 429 without Retry-After on POST and stop after 3); instead:

    204                  accepted
    429                  wait Retry-After (else backoff), retry
    408, 5xx, timeouts,  back off with jitter, retry; after `retry.max_attempts` tries raise
    connection errors    RetriableError (RateLimited for 429): the pipeline retries the batch later
    400, 413             raise `Refused`: the caller splits the request or dead-letters the record
    401, 403, 404, TLS   UserError naming the fix (token/tenant, role on the DCR, DCR id/stream, URL)
    other statuses       FatalError (redirects included: they are never followed)

Every failed try is logged with Azure's `x-ms-error-code` and `x-ms-request-id`; never a body or a token.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import requests
from azure.core.credentials import TokenCredential
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RedirectPolicy
from azure.core.pipeline.policies import RetryPolicy as AzureRetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.monitor.ingestion import LogsIngestionClient

from opsentinel.errors import AuthError, ConfigError, FatalError, RateLimited, RetriableError
from opsentinel.schema import DCR_STREAM_NAME
from opsentinel.sinks.sentinel_errors import (
    Failure,
    FailureKind,
    classify,
    forbidden_message,
    not_found_message,
    tls_message,
    unauthorized_message,
    unreachable_message,
)
from opsentinel.source.retry import RetryPolicy

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_AUDIENCE",
    "DEFAULT_UPLOAD_RETRY",
    "Refused",
    "Uploader",
    "gzip_bytes",
    "validate_dcr_id",
    "validate_endpoint",
    "validate_stream_name",
]

log = logging.getLogger("opsentinel.sinks.sentinel")

DEFAULT_AUDIENCE: Final = "https://monitor.azure.com"
# Six tries, at most about a minute of backoff in all, then the batch goes back to the pipeline.
DEFAULT_UPLOAD_RETRY: Final = RetryPolicy(
    max_attempts=6, base_delay=2.0, max_delay=60.0, max_retry_after=300.0
)
CONNECT_TIMEOUT: Final = 10.0

_DCR_ID = re.compile(r"^dcr-[0-9a-f]{32}$", re.IGNORECASE)
_STREAM = re.compile(r"^(Custom|Microsoft)-[A-Za-z0-9_]{1,200}$")


def validate_endpoint(url: str) -> str:
    """The endpoint as `https://host[:port]`; ConfigError (one line) unless it is such a base URL."""
    parts = urlsplit(url.strip())
    shown = url if len(url) <= 100 else url[:97] + "..."
    if parts.username or parts.password:
        raise ConfigError("the Logs Ingestion endpoint must not contain a user name or password")
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(
            "the Logs Ingestion endpoint must be an https:// URL such as "
            f"https://my-dce-a1b2.eastus-1.ingest.monitor.azure.com (got {shown!r})"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            f"the Logs Ingestion endpoint must be a base URL without a path or query (got {shown!r}): "
            "use the DCE's or the DCR's logs ingestion endpoint as the portal shows it"
        )
    return f"https://{parts.netloc}"


def validate_dcr_id(dcr_id: str) -> str:
    """The DCR immutable id (`dcr-` + 32 hex digits), or ConfigError."""
    if not _DCR_ID.match(dcr_id.strip()):
        raise ConfigError(
            f"the DCR id must be the rule's immutable id, dcr- and 32 hex digits (got {dcr_id[:60]!r})"
        )
    return dcr_id.strip()


def validate_stream_name(stream: str) -> str:
    """A stream declaration name (`Custom-...` or `Microsoft-...`), or ConfigError."""
    if not _STREAM.match(stream.strip()):
        raise ConfigError(
            f"the DCR stream must be a stream declaration name such as {DCR_STREAM_NAME} "
            f"(got {stream[:60]!r})"
        )
    return stream.strip()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


class Refused(Exception):
    """Azure refused the payload itself (400/413): split the request, or dead-letter its record."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


class Uploader:
    """Posts gzipped JSON arrays to one DCR stream; thread-safe (one client, shared connection pool)."""

    def __init__(
        self,
        endpoint: str,
        dcr_id: str,
        stream_name: str,
        credential: TokenCredential,
        *,
        scope: str,
        retry: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        connection_verify: str | bool | None = None,
        timeout: float = 60.0,
        pool_size: int = 4,
        history: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.dcr_id = dcr_id
        self.stream_name = stream_name
        self.retry = retry
        self.history = history  # the history stream: a 404 means a DCR without it
        self._sleep = sleep
        self._authenticated = False  # set by the first accepted upload
        session = requests.Session()
        session.mount("https://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size))
        transport = RequestsTransport(
            session=session,
            session_owner=True,
            connection_verify=True if connection_verify is None else connection_verify,
            connection_timeout=connect_timeout,
            read_timeout=timeout,
        )
        self._client = LogsIngestionClient(
            endpoint,
            credential,
            credential_scopes=[scope],
            transport=transport,
            retry_policy=AzureRetryPolicy.no_retries(),
            # Azure never redirects an upload; following one would deliver the records (names,
            # e-mail addresses, IPs) to another host and count them as accepted.
            redirect_policy=RedirectPolicy.no_redirects(),
        )

    def close(self) -> None:
        self._client.close()

    def post(
        self,
        body: bytes,
        *,
        records: int,
        fail_fast: bool = False,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Send the gzipped JSON array `body` (`records` records) until accepted; see the module table.

        `fail_fast` (used by check): an unreachable endpoint is a ConfigError at once, not a retry.
        `before` is called before every try and may raise to stop (a replica that may no longer
        start an upload).
        """
        attempt = 0
        while True:
            attempt += 1
            if before is not None:
                before()
            request_id: list[str] = []
            try:
                self._client.upload(
                    self.dcr_id,
                    self.stream_name,
                    io.BytesIO(body),
                    raw_response_hook=_request_id_hook(request_id),
                )
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                self._raise_if_final(failure, exc, fail_fast)
                if attempt >= self.retry.max_attempts:
                    self._log_failure(failure, records, attempt, None)
                    self._raise_exhausted(failure, attempt, exc)
                delay = self.retry.delay(attempt, failure.retry_after)
                self._log_failure(failure, records, attempt, delay)
                self._sleep(delay)
                continue
            self._authenticated = True
            log.debug(
                "uploaded %d record(s), %d bytes gzip, x-ms-request-id=%s",
                records,
                len(body),
                request_id[0] if request_id else "-",
            )
            return

    def _raise_if_final(self, failure: Failure, exc: Exception, fail_fast: bool) -> None:
        kind = failure.kind
        if kind is FailureKind.REJECTED:
            self._log_failure(failure, None, None, None)
            raise Refused(failure) from exc
        if kind is FailureKind.UNAUTHORIZED:
            raise AuthError(unauthorized_message(self.endpoint, failure)) from exc
        if kind is FailureKind.FORBIDDEN:
            raise AuthError(forbidden_message(self.dcr_id, failure)) from exc
        if kind is FailureKind.NOT_FOUND:
            message = not_found_message(
                self.endpoint, self.dcr_id, self.stream_name, failure, history=self.history
            )
            raise ConfigError(message) from exc
        if kind is FailureKind.TLS:
            raise ConfigError(tls_message(self.endpoint, failure)) from exc
        if kind is FailureKind.OTHER_STATUS:
            raise FatalError(
                f"Azure Logs Ingestion answered {failure.describe()} for DCR {self.dcr_id}",
                status=failure.status,
            ) from exc
        if kind is FailureKind.CREDENTIAL and not self._authenticated:
            raise AuthError(failure.detail) from exc  # never had a token: a set-up problem
        if kind is FailureKind.UNREACHABLE and fail_fast:
            raise ConfigError(unreachable_message(self.endpoint, failure)) from exc

    def _raise_exhausted(self, failure: Failure, attempts: int, exc: Exception) -> NoReturn:
        what = failure.describe()
        if failure.kind is FailureKind.THROTTLED:
            raise RateLimited(
                f"Azure Logs Ingestion kept throttling after {attempts} tries ({what})",
                retry_after=failure.retry_after,
            ) from exc
        raise RetriableError(
            f"Azure Logs Ingestion at {self.endpoint} kept failing after {attempts} tries ({what})",
            status=failure.status,
        ) from exc

    def _log_failure(
        self, failure: Failure, records: int | None, attempt: int | None, delay: float | None
    ) -> None:
        where = f" (try {attempt}/{self.retry.max_attempts})" if attempt is not None else ""
        then = f"; retrying in {delay:.1f}s" if delay is not None else ""
        size = f" of {records} record(s)" if records is not None else ""
        log.warning(
            "upload%s to DCR %s failed%s: %s x-ms-error-code=%s x-ms-request-id=%s%s",
            size,
            self.dcr_id,
            where,
            failure.describe(),
            failure.code or "-",
            failure.request_id or "-",
            then,
        )


def _request_id_hook(found: list[str]) -> Callable[[PipelineResponse[Any, Any]], None]:
    def hook(response: PipelineResponse[Any, Any]) -> None:
        value = response.http_response.headers.get("x-ms-request-id")
        if value:
            found.append(value)

    return hook
