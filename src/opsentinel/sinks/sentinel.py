"""The Microsoft Sentinel sink: events to `OnePasswordEventLogs_CL` through the Logs Ingestion API.

Each event becomes the record the DCR stream declaration expects (`transform.to_dcr_record`: raw API
field names plus `log_source`). Records are packed into requests of at most 1 MiB of JSON
(`sentinel_chunks`), gzipped and sent one request each by `sentinel_upload.Uploader`, which owns
the retry policy and turns Azure's answers into our errors. A request Azure refuses (400/413) is
split in halves until the refused record is alone; it goes to the dead-letter file
(`sentinel_deadletter`) and the rest is delivered.

Requests go out concurrently on one pool shared by every `write`, so at most `max_concurrency` are in
flight in total, whichever threads call `write`. `write` returns only when every record was accepted
or dead-lettered. The sink is not transactional: the pipeline commits the checkpoint to its own store
after `write` returns, so a crash in between re-sends at most the unacknowledged batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from opsentinel.errors import AuthError, ConfigError, FatalError, RetriableError, UserError
from opsentinel.schema import DCR_STREAM_NAME
from opsentinel.sinks.base import Batch
from opsentinel.sinks.sentinel_chunks import MAX_REQUEST_BYTES, Chunk, plan_chunks
from opsentinel.sinks.sentinel_deadletter import DeadLetterFile
from opsentinel.sinks.sentinel_errors import credential_message
from opsentinel.sinks.sentinel_upload import (
    DEFAULT_AUDIENCE,
    DEFAULT_UPLOAD_RETRY,
    Refused,
    Uploader,
    gzip_bytes,
    validate_dcr_id,
    validate_endpoint,
    validate_stream_name,
)
from opsentinel.source.baseurl import is_loopback_host
from opsentinel.source.retry import RetryPolicy
from opsentinel.state import Checkpoint
from opsentinel.streams import HEALTH_LOG_SOURCE
from opsentinel.telemetry import new_event_uuid
from opsentinel.timefmt import format_rfc3339
from opsentinel.transform import to_dcr_record

__all__ = ["DEFAULT_UPLOAD_RETRY", "SentinelSink"]

log = logging.getLogger("opsentinel.sinks.sentinel")


def _severity(exc: BaseException) -> int:
    if isinstance(exc, UserError):
        return 3
    if isinstance(exc, FatalError):
        return 2
    if isinstance(exc, RetriableError):
        return 1
    return 4  # a bug: let it surface first


def _default_credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    try:
        return DefaultAzureCredential()
    except ValueError as exc:  # e.g. a bad AZURE_TOKEN_CREDENTIALS value
        raise ConfigError(f"invalid Azure credential settings: {exc}") from exc


class SentinelSink:
    """Delivers batches to a DCR stream with the Logs Ingestion API (see the module docstring).

    `endpoint` is the DCE's or the DCR's logs ingestion URL (https), `dcr_id` the DCR's immutable id.
    `credential` defaults to `DefaultAzureCredential()` (service principal from the environment,
    workload identity, managed identity, Azure CLI, ...). `connection_verify` is a CA bundle path,
    True, False (a loopback endpoint only), or None for the default (system CAs, or
    REQUESTS_CA_BUNDLE). `retry` bounds the tries per request and the waits between them; `sleep`
    is called for every wait. `timeout` is the read timeout per request, `audience` the token
    audience (sovereign clouds: https://monitor.azure.us, https://monitor.azure.cn). Invalid
    settings raise ConfigError at construction.
    """

    name = "sentinel"
    transactional = False

    def __init__(
        self,
        endpoint: str,
        dcr_id: str,
        stream_name: str = DCR_STREAM_NAME,
        *,
        credential: TokenCredential | None = None,
        dead_letter_dir: Path,
        max_concurrency: int = 4,
        connection_verify: str | bool | None = None,
        retry: RetryPolicy = DEFAULT_UPLOAD_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 60.0,
        audience: str = DEFAULT_AUDIENCE,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not 2 < max_request_bytes <= MAX_REQUEST_BYTES:
            raise ValueError(f"max_request_bytes must be within 3..{MAX_REQUEST_BYTES}")
        self.endpoint = validate_endpoint(endpoint)
        if connection_verify is False and not is_loopback_host(urlsplit(self.endpoint).hostname or ""):
            raise ConfigError(f"TLS certificate verification cannot be turned off for {self.endpoint}")
        self.dcr_id = validate_dcr_id(dcr_id)
        self.stream_name = validate_stream_name(stream_name)
        self.max_concurrency = max_concurrency
        self._max_request_bytes = max_request_bytes
        self._scope = audience.rstrip("/") + "/.default"
        self._dead_letters = DeadLetterFile(dead_letter_dir)
        self._owns_credential = credential is None
        self._credential = credential if credential is not None else _default_credential()
        self._uploader = Uploader(
            self.endpoint,
            self.dcr_id,
            self.stream_name,
            self._credential,
            scope=self._scope,
            retry=retry,
            sleep=sleep,
            connection_verify=connection_verify,
            timeout=timeout,
            pool_size=max(max_concurrency, 4),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="sentinel-upload")
        self._closed = False
        self._lock = threading.Lock()

    @property
    def dead_letter_path(self) -> Path:
        """Where refused records are kept (`<dead_letter_dir>/dead-letter.jsonl`)."""
        return self._dead_letters.path

    # --- Sink protocol --------------------------------------------------------------------------

    def prepare(self, batch: Batch) -> Batch:
        return batch  # not transactional: `write` already runs outside the commit lock

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None) -> Checkpoint | None:
        """Deliver every event of `batch`; return None once each was accepted or dead-lettered.

        Raises UserError (configuration, role, credentials), RetriableError (Azure kept failing or
        throttling: retry the batch later) or FatalError (an unexpected status). On a raise, some
        requests of the batch may have been accepted: re-sending the batch can duplicate them.
        Safe to call from several threads at once.
        """
        if checkpoint is not None:
            raise ValueError("the sentinel sink is not transactional: checkpoint must be None")
        self._ensure_open()
        if not batch.events:
            return None
        plan = plan_chunks(
            (to_dcr_record(batch.log_source, event) for event in batch.events), self._max_request_bytes
        )
        for uuid, fields in plan.truncated:
            log.warning(
                "%s record %s: cut field(s) %s to 64 KiB to fit a request (Azure keeps 64 KB per field)",
                batch.log_source,
                uuid or "(no uuid)",
                ", ".join(fields),
            )
        for oversized in plan.oversized:
            self._dead_letter(batch.log_source, oversized.record, oversized.reason)
        futures = [self._pool.submit(self._deliver, chunk, batch.log_source) for chunk in plan.chunks]
        self._wait_all(futures)
        log.debug(
            "delivered %d %s record(s) in %d request(s)", len(batch.events), batch.log_source, len(futures)
        )
        return None

    def check(self) -> str:
        """Get a token, then upload one `healthevents` record: proves endpoint, DCR id, stream, role.

        Returns one line; raises UserError whose line says which part is wrong.
        """
        self._ensure_open()
        try:
            self._credential.get_token(self._scope)
        except ClientAuthenticationError as exc:
            raise AuthError(credential_message(exc)) from exc
        record = to_dcr_record(
            HEALTH_LOG_SOURCE,
            {
                "uuid": new_event_uuid(),
                "timestamp": format_rfc3339(datetime.now(UTC)),
                "category": "healthy",
                "type": "check",
                "details": {"message": "op-sentinel check"},
            },
        )
        try:
            self._uploader.post(gzip_bytes(orjson.dumps([record])), records=1, fail_fast=True)
        except Refused as refused:
            raise ConfigError(
                f"Azure refused op-sentinel's check record ({refused.failure.describe()}): stream "
                f"{self.stream_name} of DCR {self.dcr_id} does not take op-sentinel's records; deploy "
                "the DCR from `op-sentinel azure template`"
            ) from refused
        except RetriableError as exc:
            raise ConfigError(
                f"the Logs Ingestion endpoint {self.endpoint} kept failing ({exc}); try again later"
            ) from exc
        return (
            f"Azure Logs Ingestion {self.endpoint} accepted a health record for DCR {self.dcr_id}, "
            f"stream {self.stream_name}"
        )

    def close(self) -> None:
        """Wait for in-flight requests, then release connections (and the credential we created)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True)
        self._uploader.close()
        if self._owns_credential:
            close = getattr(self._credential, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> SentinelSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- delivery -------------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("the sentinel sink is closed")

    def _wait_all(self, futures: Sequence[Future[None]]) -> None:
        """Wait for every request; on the first failure cancel those not started, raise the worst."""
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending and any(f.exception() is not None for f in done):
            for future in pending:
                future.cancel()
            wait(pending)
        errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
        if errors:
            raise max(errors, key=_severity)

    def _deliver(self, chunk: Chunk, log_source: str) -> None:
        """Send `chunk`; on 400/413 bisect it, dead-lettering single records that stay refused."""
        body = gzip_bytes(chunk.body())
        if len(body) > self._max_request_bytes and len(chunk) > 1:  # incompressible: never send >1 MiB
            left, right = chunk.halves()
            self._deliver(left, log_source)
            self._deliver(right, log_source)
            return
        try:
            self._uploader.post(body, records=len(chunk))
        except Refused as refused:
            if len(chunk) == 1:
                reason = f"Azure refused the record ({refused.failure.describe()})"
                self._dead_letter(log_source, chunk.items[0].record, reason)
                return
            log.info(
                "Azure refused a request of %d records (%s); splitting it to isolate the bad record(s)",
                len(chunk),
                refused.failure.describe(),
            )
            left, right = chunk.halves()
            self._deliver(left, log_source)
            self._deliver(right, log_source)

    def _dead_letter(self, log_source: str, record: Mapping[str, Any], reason: str) -> None:
        self._dead_letters.add(stream=log_source, reason=reason, record=record)
        log.error(
            "dead-lettered %s record %s into %s: %s",
            log_source,
            record.get("uuid") or "(no uuid)",
            self._dead_letters.path,
            reason,
        )
