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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from opsentinel.errors import AuthError, ConfigError, FatalError, RetriableError, UserError
from opsentinel.schema import DCR_STREAM_NAME
from opsentinel.sinks.base import Batch, Receipt
from opsentinel.sinks.sentinel_chunks import MAX_REQUEST_BYTES, Chunk, plan_chunks
from opsentinel.sinks.sentinel_deadletter import DeadLetterFile
from opsentinel.sinks.sentinel_errors import Failure, credential_message
from opsentinel.sinks.sentinel_upload import (
    CONNECT_TIMEOUT,
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


def _probe_record(kind: str) -> dict[str, Any]:
    """A minimal `healthevents` record, the shape every op-sentinel DCR takes."""
    return to_dcr_record(
        HEALTH_LOG_SOURCE,
        {
            "uuid": new_event_uuid(),
            "timestamp": format_rfc3339(datetime.now(UTC)),
            "category": "healthy",
            "type": kind,
            "details": {"message": f"op-sentinel {kind}"},
        },
    )


# Levels of splitting before a chunk none of whose parts Azure takes is judged refused as a whole:
# at most 2 ** (_DEPTH + 1) - 1 requests for it (63), never one per record.
_DEPTH = 5


_DESTINATION_WORDS = ("stream", "dcr", "datacollectionrule", "data collection rule", "schema", "transform")


def _names_destination(failure: Failure, stream: str, dcr_id: str) -> bool:
    """A 400 that speaks of the stream, the DCR or its schema: the request itself is wrong."""
    if failure.status != 400:
        return False
    text = f"{failure.code or ''} {failure.message or ''}".lower()
    return stream.lower() in text or dcr_id.lower() in text or any(w in text for w in _DESTINATION_WORDS)


@dataclass(frozen=True)
class _Route:
    """A DCR stream and the uploader that sends to it."""

    stream: str
    uploader: Uploader


class _Outcome:
    """What became of one batch's records on one route so far; reports each resolved part, by its
    positions in the batch, as it happens."""

    def __init__(
        self,
        log_source: str,
        route: _Route,
        positions: Sequence[int],
        on_resolved: Callable[[Sequence[int], bool], None] | None,
        before_send: Callable[[], None] | None = None,
    ) -> None:
        self.log_source = log_source
        self.route = route
        self.before_send = before_send
        self.positions = positions
        self._on_resolved = on_resolved
        self._lock = threading.Lock()
        self.accepted = 0
        self.refused = 0

    def accepted_part(self, chunk: Chunk) -> None:
        with self._lock:
            self.accepted += len(chunk)
        if self._on_resolved is not None:
            self._on_resolved([self.positions[item.index] for item in chunk.items], True)

    def dead_lettered(self, indexes: Sequence[int]) -> None:
        with self._lock:
            self.refused += len(indexes)
        if self._on_resolved is not None:
            self._on_resolved([self.positions[i] for i in indexes], False)


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
        history_stream: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
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
        self.history_stream = validate_stream_name(history_stream) if history_stream else None

        def uploader(stream: str, history: bool = False) -> Uploader:
            return Uploader(
                self.endpoint,
                self.dcr_id,
                stream,
                self._credential,
                scope=self._scope,
                retry=retry,
                sleep=sleep,
                connection_verify=connection_verify,
                timeout=timeout,
                pool_size=max(max_concurrency, 4),
                history=history,
                connect_timeout=connect_timeout,
            )

        self._main = _Route(self.stream_name, uploader(self.stream_name))
        self._history = (
            _Route(self.history_stream, uploader(self.history_stream, history=True))
            if self.history_stream
            else None
        )
        self._uploader = self._main.uploader
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

    def write(self, batch: Batch, checkpoint: Checkpoint | None = None) -> Receipt:
        """Deliver every event of `batch`; return once each was accepted or dead-lettered.

        Raises ConfigError when Azure refuses the requests themselves (see `_settle`), UserError
        (configuration, role, credentials), RetriableError (Azure kept failing or throttling: retry
        the batch later) or FatalError (an unexpected status). On a raise, the parts already
        accepted were reported through `batch.on_resolved`; the rest may be sent again.
        Safe to call from several threads at once.
        """
        if checkpoint is not None:
            raise ValueError("the sentinel sink is not transactional: checkpoint must be None")
        self._ensure_open()
        if not batch.events:
            return Receipt(0)
        parts = [(self._main, list(range(len(batch.events))))]
        if self._history is not None and batch.boundary is not None and batch.times is not None:
            boundary = batch.boundary
            old = [i for i, t in enumerate(batch.times) if t < boundary]
            if old:
                new = [i for i, t in enumerate(batch.times) if not t < boundary]
                parts = [(self._main, new), (self._history, old)]
        outcomes = [
            _Outcome(batch.log_source, route, positions, batch.on_resolved) for route, positions in parts
        ]
        futures: list[Future[None]] = []
        for outcome in outcomes:
            futures += self._submit(batch, outcome)
        self._wait_all(futures)
        log.debug(
            "delivered %d %s record(s) in %d request(s)", len(batch.events), batch.log_source, len(futures)
        )
        return Receipt(sum(o.accepted for o in outcomes), dead_lettered=sum(o.refused for o in outcomes))

    def _submit(self, batch: Batch, outcome: _Outcome) -> list[Future[None]]:
        """Plan the outcome's records into requests, dead-letter those that cannot be sent, and start
        the requests."""
        if not outcome.positions:
            return []
        plan = plan_chunks(
            (to_dcr_record(batch.log_source, batch.events[i]) for i in outcome.positions),
            self._max_request_bytes,
        )
        for uuid, fields in plan.truncated:
            log.warning(
                "%s record %s: cut field(s) %s to 64 KiB to fit a request (Azure keeps 64 KB per field)",
                batch.log_source,
                uuid or "(no uuid)",
                ", ".join(fields),
            )
        for oversized in plan.oversized:
            self._dead_letter(outcome, oversized.record, oversized.reason)
            outcome.dead_lettered([oversized.index])
        return [self._pool.submit(self._deliver, chunk, outcome) for chunk in plan.chunks]

    def check(self) -> str:
        """Get a token, then upload one `healthevents` record: proves endpoint, DCR id, stream, role.

        Returns one line; raises UserError whose line says which part is wrong.
        """
        self._ensure_open()
        try:
            self._credential.get_token(self._scope)
        except ClientAuthenticationError as exc:
            raise AuthError(credential_message(exc)) from exc
        routes = [self._main] if self._history is None else [self._main, self._history]
        for route in routes:
            self._check_route(route)
        streams = " and ".join(route.stream for route in routes)
        return (
            f"Azure Logs Ingestion {self.endpoint} accepted a health record for DCR {self.dcr_id}, "
            f"stream {streams}"
        )

    def _check_route(self, route: _Route) -> None:
        record = _probe_record("check")
        try:
            route.uploader.post(gzip_bytes(orjson.dumps([record])), records=1, fail_fast=True)
        except Refused as refused:
            raise ConfigError(
                f"Azure refused op-sentinel's check record ({refused.failure.describe()}): stream "
                f"{route.stream} of DCR {self.dcr_id} does not take op-sentinel's records; deploy "
                "the DCR from `op-sentinel azure template`"
            ) from refused
        except RetriableError as exc:
            raise ConfigError(
                f"the Logs Ingestion endpoint {self.endpoint} kept failing ({exc}); try again later"
            ) from exc

    def close(self) -> None:
        """Wait for in-flight requests, then release connections (and the credential we created)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True)
        self._main.uploader.close()
        if self._history is not None:
            self._history.uploader.close()
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

    def _deliver(self, chunk: Chunk, outcome: _Outcome) -> None:
        failure = self._try(chunk, outcome)
        if failure is not None:
            self._settle(chunk, failure, outcome)

    def _try(self, chunk: Chunk, outcome: _Outcome) -> Failure | None:
        """Send `chunk` (in halves if it will not fit gzipped); None once accepted, else the refusal."""
        body = gzip_bytes(chunk.body())
        if len(body) > self._max_request_bytes and len(chunk) > 1:  # incompressible: never send >1 MiB
            left, right = chunk.halves()
            for part in (left, right):
                failure = self._try(part, outcome)
                if failure is not None:
                    self._settle(part, failure, outcome)
            return None
        try:
            outcome.route.uploader.post(body, records=len(chunk), before=outcome.before_send)
        except Refused as refused:
            return refused.failure
        outcome.accepted_part(chunk)
        return None

    def _settle(self, chunk: Chunk, failure: Failure, outcome: _Outcome) -> None:
        """Azure refused `chunk`: find out whether it refuses the request itself (then stop the
        stream: nothing is dead-lettered, nothing counts as delivered) or some of its records (then
        only those go to the dead letters).

        The chunk is split level by level (halves, quarters, ...). As soon as a part is accepted,
        the refusal is the records': the refused parts are split down to the single records that
        Azure refuses beside accepted ones, and only those are dead-lettered. The refusal is the
        request's when Azure names the stream, DCR, schema or transform; when nothing is accepted
        down to the quarters and a known-good health record is refused too; or when nothing of the
        chunk is accepted down to `_DEPTH` levels (or down to single records) at all. A lone record
        is dead-lettered only if a health record is accepted in its place."""
        route = outcome.route
        if _names_destination(failure, route.stream, self.dcr_id):
            raise self._refuses_requests(route, failure)
        if len(chunk) == 1:
            if failure.status != 413 and not outcome.accepted and not self._takes_a_health_record(route):
                raise self._refuses_requests(route, failure)
            self._refused_record(chunk, failure, outcome)
            return
        log.info(
            "Azure refused a request of %d records (%s); splitting it to find the bad record(s)",
            len(chunk),
            failure.describe(),
        )
        frontier = [(chunk, failure)]
        taken = False
        for level in range(_DEPTH):
            if level == 2 and not self._takes_a_health_record(route):
                raise self._refuses_requests(route, failure)
            nxt: list[tuple[Chunk, Failure]] = []
            for part, part_failure in frontier:
                if len(part) < 2:
                    nxt.append((part, part_failure))
                    continue
                for half in part.halves():
                    half_failure = self._try(half, outcome)
                    if half_failure is None:
                        taken = True
                    else:
                        nxt.append((half, half_failure))
            frontier = nxt
            if taken or all(len(part) == 1 for part, _ in frontier):
                break
        if not taken and failure.status != 413:
            raise self._refuses_requests(route, failure)
        for part, part_failure in frontier:
            self._settle_record_level(part, part_failure, outcome)

    def _settle_record_level(self, chunk: Chunk, failure: Failure, outcome: _Outcome) -> None:
        """Bisect a refused part down to its bad records (some of its neighbours were accepted)."""
        if len(chunk) == 1:
            self._refused_record(chunk, failure, outcome)
            return
        for half in chunk.halves():
            half_failure = self._try(half, outcome)
            if half_failure is not None:
                self._settle_record_level(half, half_failure, outcome)

    def _refused_record(self, chunk: Chunk, failure: Failure, outcome: _Outcome) -> None:
        item = chunk.items[0]
        self._dead_letter(outcome, item.record, f"Azure refused the record ({failure.describe()})")
        outcome.dead_lettered([item.index])

    @staticmethod
    def _takes_a_health_record(route: _Route) -> bool:
        """Whether Azure accepts a known-good record on the route's stream now (a `healthevents` probe)."""
        try:
            route.uploader.post(gzip_bytes(orjson.dumps([_probe_record("probe")])), records=1)
        except Refused:
            return False
        return True

    def _refuses_requests(self, route: _Route, failure: Failure) -> ConfigError:
        return ConfigError(
            f"Azure refuses op-sentinel's uploads to stream {route.stream} of DCR {self.dcr_id} "
            f"({failure.describe()}): check that the DCR and its stream declaration come from "
            "`op-sentinel azure template`; nothing was dead-lettered and the checkpoint did not move"
        )

    def _dead_letter(self, outcome: _Outcome, record: Mapping[str, Any], reason: str) -> None:
        history = outcome.route is self._history
        self._dead_letters.add(stream=outcome.log_source, reason=reason, record=record, history=history)
        log.error(
            "dead-lettered %s record %s into %s: %s",
            outcome.log_source,
            record.get("uuid") or "(no uuid)",
            self._dead_letters.path,
            reason,
        )
