"""Checkpoints, stream status and the delivered-uuid ledger in an Azure Blob container (`--state URL`).

One unit per (account, stream) (layout in blobaccess):

- the **unit blob** `checkpoints/<account>/<stream>.json` holds the checkpoint, the same JSON as the
  file store's; its metadata holds the owner, the version and commit time, the ledger generation and
  the stream status (so `status` reads every unit from one listing). A commit is one Put Blob;
- the **ledger** is an append blob per generation, `ledger/<account>/<stream>/<gen>.jsonl`, one
  `{"u": [...], "t": [...]}` line per append (one Append Block, atomic: never a torn line).
  Compaction (`rewrite_ledger`), or an append blob nearing its 50,000-block limit, writes a new
  generation and then points the unit at it: until that one metadata write, the old one is current.

Only the owner writes: every write names the unit's lease (see leases) and the ETag this process last
saw, so the storage service refuses a replica that lost the unit (LeaseLost) or a stale view
(CheckpointConflict), whatever that replica believes. When a write's outcome is unknown (a timeout, a
retry answered "condition not met"), the store reads the blob back and counts the write done only if
its own bytes are there. Reads need no lease. Failures are one-line StoreErrors naming the state URL.

Status writes are spared: a status that differs from the stored one only in its counters and times
is written at most every `status_interval` seconds (a new error is written at once), and every
checkpoint commit carries the newest status along for free.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobClient, BlobLeaseClient, ContentSettings

from opsentinel.checkpoints.blobaccess import (
    CHECKPOINTS,
    META_LEDGER,
    META_STATUS,
    META_UPDATED,
    META_VERSION,
    BlobLocation,
    BlobState,
    error_code,
    status_metadata,
)
from opsentinel.checkpoints.codec import (
    checkpoint_from_json,
    checkpoint_json,
    decode_record,
    ledger_line,
    parse_ledger,
    time_text,
)
from opsentinel.checkpoints.membership import read_membership
from opsentinel.checkpoints.ownership import UnitLease, is_loss
from opsentinel.checkpoints.ownership import clock as lease_clock
from opsentinel.errors import CheckpointConflict, LeaseLost, StoreError
from opsentinel.state import Checkpoint, StreamStatus

__all__ = ["BlobCheckpointStore"]

log = logging.getLogger(__name__)

ROLLOVER_BLOCKS: Final = 45_000  # an append blob takes 50,000 blocks; roll over well before
APPEND_CHUNK: Final = 4 * 1024 * 1024  # the largest Append Block every service version accepts
STATUS_INTERVAL: Final = 60.0
_JSON: Final = ContentSettings(content_type="application/json")


class BlobCheckpointStore:
    """CheckpointStore, StatusStore and LedgerStore over a Blob state. Writes need the unit's lease
    (claimed through leases.LeaseManager on the same BlobState); reads do not. Thread-safe."""

    def __init__(
        self,
        state: BlobState,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        status_interval: float = STATUS_INTERVAL,
        monotonic: Callable[[], float] = lease_clock,
    ) -> None:
        self.state = state
        self._clock = clock
        self._monotonic = monotonic
        self.status_interval = status_interval

    @classmethod
    def open(cls, url: str | BlobLocation, *, env: Mapping[str, str] | None = None) -> BlobCheckpointStore:
        return cls(BlobState.open(url, env=env))

    def __repr__(self) -> str:
        return f"BlobCheckpointStore({str(self.state.location)!r})"

    def close(self) -> None:
        self.state.close()

    def ensure_writable(self) -> None:
        """Create the container if missing and prove a blob can be written there (StoreError)."""
        probe = self.state.container.get_blob_client(f"probes/{secrets.token_hex(8)}")
        try:
            try:
                probe.upload_blob(b"", overwrite=True)
            except ResourceNotFoundError:  # no container yet (a container-scoped SAS cannot make one)
                self.state.ensure_container()
                probe.upload_blob(b"", overwrite=True)
            probe.delete_blob()
        except AzureError as exc:
            raise self.state.fail(exc, "write") from exc

    # CheckpointStore ---------------------------------------------------------------------------

    def read(self, account: str, stream: str) -> Checkpoint | None:
        lease = self._owned(account, stream)
        if lease is None:
            raw, _, _ = self._download(account, stream)
            return self._decode(raw, account, stream)
        with lease.cp_lock:
            return self._refresh(lease)

    def commit(self, checkpoint: Checkpoint) -> Checkpoint:
        """Store `checkpoint` if the stored version equals `checkpoint.version` (0 = none stored),
        with the unit's lease and last-seen ETag. CheckpointConflict (LeaseLost when the unit is not
        this process's any more) and nothing stored otherwise."""
        account, stream = checkpoint.account, checkpoint.stream
        doing = f"commit the checkpoint of {stream} (account {account})"
        lease = self._lease(account, stream, doing)
        with lease.cp_lock:
            lease.check(doing)
            if lease.version != checkpoint.version or lease.etag is None:
                self._refresh(lease)
                if lease.version != checkpoint.version:
                    raise CheckpointConflict(
                        f"checkpoint of {stream} (account {account}) is at version {lease.version}, "
                        f"not {checkpoint.version}: another run committed first"
                    )
            stored = replace(checkpoint, version=checkpoint.version + 1, updated_at=self._clock())
            body = orjson.dumps(checkpoint_json(stored), option=orjson.OPT_INDENT_2) + b"\n"
            metadata = {
                **lease.metadata,
                META_VERSION: str(stored.version),
                META_UPDATED: str(time_text(stored.updated_at)),
            }
            status = lease.status
            if status is not None:
                metadata[META_STATUS] = status_metadata(status)
            self._write_unit(lease, metadata, doing, body=body)
            lease.version = stored.version
            if status is not None:
                lease.status_stored, lease.status_written_at = status, self._monotonic()
        return stored

    def list(self) -> builtins.list[Checkpoint]:
        out = []
        try:
            names = [b.name for b in self.state.container.list_blobs(name_starts_with=CHECKPOINTS) if b.size]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise self.state.fail(exc, "list the checkpoints") from exc
        for name in names:
            blob = self.state.container.get_blob_client(name)
            try:
                raw = blob.download_blob().readall()
            except ResourceNotFoundError:
                continue
            except AzureError as exc:
                raise self.state.fail(exc, f"read {name}") from exc
            where = f"the checkpoint blob {name} in {self.state.location}"
            cp = checkpoint_from_json(decode_record(raw, where), where)
            if self.state.checkpoint_name(cp.account, cp.stream) != name:
                raise StoreError(f"{where} holds another stream's checkpoint; fix or remove it")
            out.append(cp)
        return sorted(out, key=lambda c: (c.account, c.stream))

    # StatusStore -------------------------------------------------------------------------------

    def write_status(self, status: StreamStatus) -> None:
        """Keep `status` as the unit's newest; write it now if it is news (see the module notes)."""
        if status.updated_at is None:
            status = replace(status, updated_at=self._clock())
        doing = f"write the status of {status.stream} (account {status.account})"
        lease = self._lease(status.account, status.stream, doing)
        with lease.cp_lock:
            lease.check(doing)
            lease.status = status
            stored = lease.status_stored
            if (
                stored is not None
                and (stored.last_error, stored.last_error_at) == (status.last_error, status.last_error_at)
                and self._monotonic() - lease.status_written_at < self.status_interval
            ):
                return
            for attempt in (1, 2):
                try:
                    self._write_unit(lease, {**lease.metadata, META_STATUS: status_metadata(status)}, doing)
                    break
                except LeaseLost:
                    raise
                except CheckpointConflict:
                    if attempt == 2:
                        raise
                    self._refresh(lease)  # last writer wins for a status
            lease.status_stored, lease.status_written_at = status, self._monotonic()

    def read_statuses(self) -> builtins.list[StreamStatus]:
        return [u.status for u in read_membership(self.state).units if u.status is not None]

    # LedgerStore -------------------------------------------------------------------------------

    def load_ledger(self, account: str, stream: str) -> builtins.list[tuple[str, int]]:
        lease = self._owned(account, stream)
        doing = f"read the ledger of {stream} (account {account})"
        for attempt in (1, 2):
            if lease is not None:
                generation = lease.ledger_generation
            else:
                _, metadata, _ = self._download(account, stream, content=False)
                generation = metadata.get(META_LEDGER) or None
            if not generation:
                return []
            blob = self.state.ledger_blob(account, stream, generation)
            try:
                download = blob.download_blob()
                raw = download.readall()
            except ResourceNotFoundError:
                if lease is None and attempt == 1:
                    continue  # its owner rewrote it meanwhile: read the new pointer
                log.warning(
                    "the ledger %s of %s (account %s) is missing; starting it afresh",
                    generation,
                    stream,
                    account,
                )
                return []
            except AzureError as exc:
                raise self.state.fail(exc, doing) from exc
            entries, _ = parse_ledger(raw, f"the ledger blob {blob.blob_name} in {self.state.location}")
            if lease is not None:
                with lease.ledger_lock:
                    lease.ledger_etag, lease.ledger_size = download.properties.etag, len(raw)
            return entries
        return []

    def append_ledger(self, account: str, stream: str, entries: Sequence[tuple[str, int]]) -> None:
        if not entries:
            return
        doing = f"record delivered events of {stream} (account {account})"
        lease = self._lease(account, stream, doing)
        line = ledger_line(entries)
        with lease.ledger_lock:
            lease.check(doing)
            generation = lease.ledger_generation
            if not generation:
                generation = self._new_generation(lease, b"", doing)
            blob = self.state.ledger_blob(account, stream, generation)
            try:
                if lease.ledger_etag is None or lease.ledger_size is None:
                    props = blob.get_blob_properties()
                    lease.ledger_etag, lease.ledger_size = props.etag, props.size
                result = blob.append_block(
                    line,
                    lease=lease.lease_id,
                    etag=lease.ledger_etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except HttpResponseError as exc:
                self._refused(lease, exc, doing)
                if error_code(exc) != "ConditionNotMet" or not self._appended(lease, blob, line):
                    lease.ledger_etag = None
                    raise self.state.fail(exc, doing) from exc
                return
            except ServiceRequestError as exc:
                raise self.state.fail(exc, doing) from exc
            except AzureError as exc:
                if not self._appended(lease, blob, line):
                    lease.ledger_etag = None
                    raise self.state.fail(exc, doing) from exc
                return
            lease.ledger_etag = str(result["etag"])
            lease.ledger_size = int(str(result["blob_append_offset"])) + len(line)
            if int(str(result["blob_committed_block_count"])) >= ROLLOVER_BLOCKS:
                try:
                    self._roll_over(lease, blob, doing)
                except (StoreError, CheckpointConflict) as exc:
                    log.warning("could not roll the ledger over (the append is stored): %s", exc)

    def rewrite_ledger(self, account: str, stream: str, entries: Sequence[tuple[str, int]]) -> None:
        """Replace the ledger atomically: a new generation, then the unit points at it."""
        doing = f"compact the ledger of {stream} (account {account})"
        lease = self._lease(account, stream, doing)
        with lease.ledger_lock:
            lease.check(doing)
            self._new_generation(lease, ledger_line(entries) if entries else b"", doing)

    # internals ---------------------------------------------------------------------------------

    def _owned(self, account: str, stream: str) -> UnitLease | None:
        with self.state.lock:
            return self.state.owned.get((account, stream))

    def _lease(self, account: str, stream: str, doing: str) -> UnitLease:
        lease = self._owned(account, stream)
        if lease is None:
            raise LeaseLost(f"cannot {doing}: this replica does not hold its lease; nothing stored")
        return lease

    def _download(
        self, account: str, stream: str, *, content: bool = True
    ) -> tuple[bytes, dict[str, str], str]:
        """The unit blob's bytes (b"" when it does not exist), metadata and ETag."""
        blob = self.state.unit_blob(account, stream)
        try:
            if content:
                download = blob.download_blob()
                return (
                    download.readall(),
                    dict(download.properties.metadata or {}),
                    str(download.properties.etag),
                )
            props = blob.get_blob_properties()
            return b"", dict(props.metadata or {}), str(props.etag)
        except ResourceNotFoundError:
            return b"", {}, ""
        except AzureError as exc:
            raise self.state.fail(exc, f"read the checkpoint of {stream} (account {account})") from exc

    def _decode(self, raw: bytes, account: str, stream: str) -> Checkpoint | None:
        if not raw:
            return None  # claimed, never committed
        where = f"the checkpoint blob {self.state.checkpoint_name(account, stream)} in {self.state.location}"
        cp = checkpoint_from_json(decode_record(raw, where), where)
        if (cp.account, cp.stream) != (account, stream):
            raise StoreError(f"{where} holds another stream's checkpoint; fix or remove it")
        return cp

    def _refresh(self, lease: UnitLease) -> Checkpoint | None:
        """Read the unit back into the lease's view (ETag, metadata, version). Under cp_lock."""
        raw, metadata, etag = self._download(lease.account, lease.stream)
        cp = self._decode(raw, lease.account, lease.stream)
        if etag:
            lease.etag, lease.metadata = etag, metadata
        lease.version = 0 if cp is None else cp.version
        return cp

    def _refused(self, lease: UnitLease, exc: HttpResponseError, doing: str) -> None:
        """LeaseLost (and the lease marked lost) when the service says the lease is not ours."""
        if is_loss(exc):
            lease.mark_lost(f"was refused by the storage service ({error_code(exc)})")
            raise LeaseLost(f"cannot {doing}: the lease {lease.lost_reason}; nothing stored") from None

    def _write_unit(
        self, lease: UnitLease, metadata: dict[str, str], doing: str, body: bytes | None = None
    ) -> None:
        """Put the unit blob (`body`) or its metadata, with the lease and the last-seen ETag."""
        blob = self.state.unit_blob(lease.account, lease.stream)
        if lease.etag is None:
            self._refresh(lease)
        fence = MatchConditions.IfNotModified
        try:
            if body is None:
                result = blob.set_blob_metadata(
                    metadata, lease=lease.lease_id, etag=lease.etag, match_condition=fence
                )
            else:
                result = blob.upload_blob(
                    body,
                    overwrite=True,
                    metadata=metadata,
                    content_settings=_JSON,
                    lease=BlobLeaseClient(blob, lease.lease_id),
                    etag=lease.etag,
                    match_condition=fence,
                )
        except HttpResponseError as exc:
            self._refused(lease, exc, doing)
            if error_code(exc) != "ConditionNotMet":
                lease.etag = None
                raise self.state.fail(exc, doing) from exc
            if not self._landed(lease, metadata, body, doing):
                self._confirm_owner(lease, doing)
                raise CheckpointConflict(
                    f"cannot {doing}: the unit changed under this replica (ETag); nothing stored"
                ) from None
            return
        except ServiceRequestError as exc:  # never reached the service: nothing was written
            raise self.state.fail(exc, doing) from exc
        except AzureError as exc:  # sent, no answer: it may have been written
            try:
                landed = self._landed(lease, metadata, body, doing)
            except StoreError:
                landed = False
            if not landed:
                lease.etag = None  # unknown: the next write reads the unit first
                raise self.state.fail(exc, doing) from exc
            return
        lease.etag, lease.metadata = str(result["etag"]), metadata

    def _confirm_owner(self, lease: UnitLease, doing: str) -> None:
        """After an ETag refusal: LeaseLost if the lease is not ours any more (the service checks
        the ETag before the lease, so a taken-over owner sees "condition not met" first)."""
        sent = self._monotonic()
        try:
            BlobLeaseClient(self.state.unit_blob(lease.account, lease.stream), lease.lease_id).renew()
        except HttpResponseError as exc:
            if exc.status_code in (409, 412) or is_loss(exc):
                lease.mark_lost(f"was taken over ({error_code(exc) or exc.status_code})")
                raise LeaseLost(f"cannot {doing}: the lease {lease.lost_reason}; nothing stored") from None
            return
        except AzureError:
            return
        lease.extend(sent)

    def _landed(self, lease: UnitLease, metadata: dict[str, str], body: bytes | None, doing: str) -> bool:
        """After an unclear write: is exactly what we wrote stored? (Refreshes the lease's view.)"""
        raw, stored_meta, etag = self._download(lease.account, lease.stream, content=body is not None)
        lease.etag, lease.metadata = etag or None, stored_meta
        if body is not None:
            cp = self._decode(raw, lease.account, lease.stream)
            lease.version = 0 if cp is None else cp.version
        return bool(etag) and stored_meta == metadata and (body is None or raw == body)

    def _appended(self, lease: UnitLease, blob: BlobClient, line: bytes) -> bool:
        """After an unclear append: does the ledger end with it, where it was to go?"""
        before = lease.ledger_size
        try:
            props = blob.get_blob_properties()
            if before is None or props.size != before + len(line):
                return False
            if blob.download_blob(offset=before, length=len(line)).readall() != line:
                return False
        except AzureError:
            return False
        lease.ledger_etag, lease.ledger_size = props.etag, props.size
        return True

    def _new_generation(self, lease: UnitLease, payload: bytes, doing: str) -> str:
        """Write `payload` as a new ledger generation, leased like the old one, then point the unit
        at it (the atomic step); delete older generations. Under ledger_lock."""
        old = lease.ledger_generation or ""
        number = int(old.split("-")[0]) + 1 if old.split("-")[0].isdigit() else 1
        generation = f"{number}-{secrets.token_hex(4)}"
        blob = self.state.ledger_blob(lease.account, lease.stream, generation)
        try:
            blob.create_append_blob(match_condition=MatchConditions.IfMissing)
            taker = BlobLeaseClient(blob, lease.lease_id)
            taker.acquire(lease_duration=-1)
            etag = taker.etag
            for start in range(0, len(payload), APPEND_CHUNK):
                chunk = payload[start : start + APPEND_CHUNK]
                etag = str(blob.append_block(chunk, lease=lease.lease_id)["etag"])
        except AzureError as exc:
            self._discard(blob)
            raise self.state.fail(exc, doing) from exc
        with lease.cp_lock:
            try:
                lease.check(doing)
                self._write_unit(lease, {**lease.metadata, META_LEDGER: generation}, doing)
            except CheckpointConflict:  # refused for sure: the old generation stays current
                self._discard(blob)
                raise
        lease.ledger_etag, lease.ledger_size = etag, len(payload)
        self._drop_generations(lease, keep=blob.blob_name)
        return generation

    def _roll_over(self, lease: UnitLease, blob: BlobClient, doing: str) -> None:
        try:
            raw = blob.download_blob().readall()
        except AzureError as exc:
            raise self.state.fail(exc, doing) from exc
        _, whole = parse_ledger(raw, f"the ledger blob {blob.blob_name} in {self.state.location}")
        self._new_generation(lease, raw[:whole], doing)

    def _drop_generations(self, lease: UnitLease, keep: str) -> None:
        """Delete the unit's other ledger generations (best effort: they are only garbage now)."""
        prefix = self.state.ledger_prefix(lease.account, lease.stream)
        try:
            names = [
                b.name for b in self.state.container.list_blobs(name_starts_with=prefix) if b.name != keep
            ]
        except AzureError:
            return
        for name in names:
            self._discard(self.state.container.get_blob_client(name))

    @staticmethod
    def _discard(blob: BlobClient) -> None:
        try:
            try:
                blob.delete_blob()
            except HttpResponseError as exc:
                if exc.status_code != 412:  # leased (by us or a former owner): break, then delete
                    raise
                BlobLeaseClient(blob).break_lease(lease_break_period=0)
                blob.delete_blob()
        except AzureError as exc:
            log.debug("could not delete %s: %s", blob.blob_name, error_code(exc) or type(exc).__name__)
