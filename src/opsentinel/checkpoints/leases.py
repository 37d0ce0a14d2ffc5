"""Unit ownership in a Blob state: one finite blob lease per (account, stream) unit.

The owner of a unit holds the lease on its checkpoint blob (15-60 s, default 30) and renews it from an
asyncio task of its own, every ~10 s, whatever the page loop is doing (a long 429 wait must not cost
the lease). The holder counts its deadline from *before* it sent the acquire or renew, on a clock that
keeps running while the host sleeps, so it always believes it expires earlier than the service does
(see ownership.UnitLease). Every write to a unit carries the lease id and the ETag last seen: a replica
that lost the unit is refused by the storage service, whatever its own clock says.

The ledger of a unit is an append blob with a lease of its own, infinite, taken over (broken and
acquired with the unit's lease id) by each new owner at claim time: renewing one lease per unit is
enough, and a paused old owner's late appends are refused too.

Loss of a lease (a renewal refused, the local deadline passed, a write refused) sets `UnitLease.lost`
and calls the `on_lost` callbacks, so a caller can cancel that unit's worker at once. `LeaseManager`
is the asyncio face (claim, renewal tasks, release, break, membership, heartbeat); `Leases` does the
storage requests, synchronously, on the manager's own threads (never the default executor, where page
work could delay a renewal).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import BlobClient, BlobLeaseClient

from opsentinel.checkpoints.blobaccess import (
    META_OWNER,
    META_STATUS,
    BlobState,
    error_code,
    status_from_metadata,
    status_metadata,
)
from opsentinel.checkpoints.codec import checkpoint_from_json, decode_record
from opsentinel.checkpoints.membership import Membership, heartbeat, read_membership, remove_heartbeat
from opsentinel.checkpoints.ownership import UnitLease, clock, is_loss
from opsentinel.errors import ConfigError, LeaseHeld, LeaseLost, StoreError

__all__ = ["DEFAULT_DURATION", "DEFAULT_RENEW_EVERY", "LeaseManager", "Leases", "UnitLease", "clock"]

log = logging.getLogger(__name__)

DEFAULT_DURATION: Final = 30
DEFAULT_RENEW_EVERY: Final = 10.0
MIN_DURATION: Final = 15  # the service's bounds for a finite lease
MAX_DURATION: Final = 60
RETRY_RENEW_AFTER: Final = 2.0  # after a failed renewal, while the lease has time left
RELEASED: Final = "was released by this replica"
T = TypeVar("T")


def _quick_release(lease: BlobLeaseClient) -> None:
    lease.release(retry_total=0, connection_timeout=3, read_timeout=5)


class Leases:
    """The storage requests of ownership, synchronous. `owner` is this replica's id (stored in the
    unit's metadata so others can name the holder)."""

    def __init__(
        self,
        state: BlobState,
        owner: str,
        *,
        duration: float = DEFAULT_DURATION,
        clock: Callable[[], float] = clock,
    ) -> None:
        if not MIN_DURATION <= duration <= MAX_DURATION:
            raise ConfigError(f"a lease lasts {MIN_DURATION}-{MAX_DURATION} seconds, not {duration:g}")
        self.state = state
        self.owner = owner
        self.duration = duration
        self._clock = clock

    def claim(self, account: str, stream: str, *, lease_id: str | None = None) -> UnitLease:
        """Acquire the unit (creating its blob, and the container, when missing), name this replica
        its owner and take over its ledger. LeaseHeld when another replica holds it; StoreError when
        storage fails. `lease_id`: propose this id (a unit this replica held before, whose lease may
        still run on the service)."""
        lease = UnitLease(
            account, stream, self.owner, lease_id or str(uuid.uuid4()), self.duration, self._clock
        )
        blob = self.state.unit_blob(account, stream)
        doing = f"claim {stream} (account {account})"
        lease.extend(self._acquire(blob, lease, doing))
        try:
            self._take_over(blob, lease, doing)
        except BaseException:
            with contextlib.suppress(AzureError):
                _quick_release(BlobLeaseClient(blob, lease.lease_id))
            raise
        with self.state.lock:
            self.state.owned[lease.key] = lease
        return lease

    def _acquire(self, blob: BlobClient, lease: UnitLease, doing: str) -> float:
        for _ in range(3):
            sent = self._clock()
            try:
                BlobLeaseClient(blob, lease.lease_id).acquire(lease_duration=int(self.duration))
                return sent
            except HttpResponseError as exc:
                code = error_code(exc)
                if code == "ContainerNotFound":
                    self.state.ensure_container()
                elif code != "BlobNotFound":
                    if exc.status_code == 409:
                        raise LeaseHeld(lease.account, lease.stream, self._holder(blob)) from None
                    raise self.state.fail(exc, doing) from exc
                self._create_unit(blob, doing)
            except AzureError as exc:
                raise self.state.fail(exc, doing) from exc
        raise StoreError(f"cannot {doing} in the Blob state {self.state.location}: its blob keeps vanishing")

    def _create_unit(self, blob: BlobClient, doing: str) -> None:
        try:
            blob.upload_blob(b"", overwrite=False)
        except HttpResponseError as exc:
            if error_code(exc) not in ("BlobAlreadyExists", "LeaseIdMissing"):
                raise self.state.fail(exc, doing) from exc
        except AzureError as exc:
            raise self.state.fail(exc, doing) from exc

    def _holder(self, blob: BlobClient) -> str | None:
        try:
            return blob.get_blob_properties().metadata.get(META_OWNER) or None
        except AzureError:
            return None

    def _take_over(self, blob: BlobClient, lease: UnitLease, doing: str) -> None:
        """Learn the unit's ETag, metadata and version; write this replica's name as owner; take
        the ledger's lease from whoever held it."""
        where = f"the checkpoint blob {blob.blob_name} in {self.state.location}"
        try:
            download = blob.download_blob()
            raw = download.readall()
            lease.etag = download.properties.etag
            metadata = dict(download.properties.metadata or {})
        except AzureError as exc:
            raise self.state.fail(exc, doing) from exc
        lease.version = checkpoint_from_json(decode_record(raw, where), where).version if raw else 0
        if META_STATUS in metadata:
            with contextlib.suppress(StoreError):  # a bad status is replaced by the next one
                lease.status_stored = status_from_metadata(metadata[META_STATUS], where)
        metadata[META_OWNER] = self.owner
        try:
            result = blob.set_blob_metadata(
                metadata, lease=lease.lease_id, etag=lease.etag, match_condition=MatchConditions.IfNotModified
            )
        except AzureError as exc:
            raise self.state.fail(exc, doing) from exc
        lease.etag, lease.metadata = str(result["etag"]), metadata
        generation = lease.ledger_generation
        if generation:
            self.fence_ledger(lease, generation, doing)

    def fence_ledger(self, lease: UnitLease, generation: str, doing: str) -> None:
        """Hold the ledger generation's (infinite) lease with the unit's lease id, breaking a
        previous owner's: from now on only this owner can append to it."""
        ledger = self.state.ledger_blob(lease.account, lease.stream, generation)
        taker = BlobLeaseClient(ledger, lease.lease_id)
        try:
            try:
                taker.acquire(lease_duration=-1)
            except HttpResponseError as exc:
                if error_code(exc) == "BlobNotFound":
                    return  # load_ledger reports the missing generation
                if exc.status_code != 409:
                    raise
                BlobLeaseClient(ledger).break_lease(lease_break_period=0)
                taker.acquire(lease_duration=-1)
        except AzureError as exc:
            raise self.state.fail(exc, doing) from exc
        lease.ledger_etag = taker.etag

    def renew(self, lease: UnitLease) -> None:
        """Renew now. LeaseLost (and the lease marked lost) when the service refuses; StoreError
        when it cannot be reached (the lease keeps its deadline: try again)."""
        if lease.is_lost:  # sticky; but a lease that only ran out may be renewed (if nobody took it)
            raise LeaseLost(f"the lease of {lease.stream} (account {lease.account}) {lease.lost_reason}")
        sent = self._clock()
        try:
            # No SDK retries and short timeouts: the renewal loop retries, within the lease's time.
            BlobLeaseClient(self.state.unit_blob(lease.account, lease.stream), lease.lease_id).renew(
                retry_total=0, connection_timeout=3, read_timeout=5
            )
        except HttpResponseError as exc:
            if is_loss(exc) or exc.status_code in (409, 412):
                lease.mark_lost(f"renewal refused ({error_code(exc) or exc.status_code})")
                raise LeaseLost(
                    f"the lease of {lease.stream} (account {lease.account}) is lost: {lease.lost_reason}"
                ) from None
            raise self.state.fail(
                exc, f"renew the lease of {lease.stream} (account {lease.account})"
            ) from exc
        except AzureError as exc:
            raise self.state.fail(
                exc, f"renew the lease of {lease.stream} (account {lease.account})"
            ) from exc
        lease.extend(sent)

    def release(self, lease: UnitLease) -> None:
        """Give the unit up: write its newest status if not written yet, then release both leases.
        The lease object refuses every write from now on. StoreError when storage cannot be
        reached (the service lets the lease go when it runs out)."""
        blob = self.state.unit_blob(lease.account, lease.stream)
        # The store takes the ledger's lock before the checkpoint's (an append may roll the ledger
        # over and point the unit at the new one): the same order here, or the two deadlock.
        with lease.ledger_lock, lease.cp_lock:
            if (
                lease.status is not None
                and not lease.is_lost
                and lease.seconds_left() > 0
                and lease.status != lease.status_stored
            ):
                metadata = {**lease.metadata, META_STATUS: status_metadata(lease.status)}
                with contextlib.suppress(AzureError):
                    blob.set_blob_metadata(
                        metadata,
                        lease=lease.lease_id,
                        etag=lease.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
            if lease.lost_reason == RELEASED:
                return
            lease.mark_lost(RELEASED)
            with self.state.lock:
                if self.state.owned.get(lease.key) is lease:
                    del self.state.owned[lease.key]
            try:
                _quick_release(BlobLeaseClient(blob, lease.lease_id))
                generation = lease.ledger_generation
                if generation:
                    ledger = self.state.ledger_blob(lease.account, lease.stream, generation)
                    with contextlib.suppress(HttpResponseError):
                        _quick_release(BlobLeaseClient(ledger, lease.lease_id))
            except HttpResponseError as exc:
                if not is_loss(exc) and exc.status_code not in (409, 412):
                    raise self.state.fail(exc, f"release {lease.stream} (account {lease.account})") from exc
            except AzureError as exc:
                raise self.state.fail(exc, f"release {lease.stream} (account {lease.account})") from exc

    def break_lease(self, account: str, stream: str) -> str | None:
        """Break the unit's lease now, whoever holds it (an operator freeing a stuck unit). Returns
        the replica id the unit named as owner. StoreError when the unit does not exist."""
        blob = self.state.unit_blob(account, stream)
        doing = f"break the lease of {stream} (account {account})"
        try:
            owner = blob.get_blob_properties().metadata.get(META_OWNER) or None
            BlobLeaseClient(blob).break_lease(lease_break_period=0)
        except HttpResponseError as exc:
            if error_code(exc) in ("BlobNotFound", "ContainerNotFound"):
                raise StoreError(
                    f"cannot {doing}: the Blob state {self.state.location} has no such unit"
                ) from None
            if error_code(exc) != "LeaseNotPresentWithLeaseOperation":
                raise self.state.fail(exc, doing) from exc
        except AzureError as exc:
            raise self.state.fail(exc, doing) from exc
        return owner


class LeaseManager:
    """Claims units for one replica and keeps them: a renewal task per unit, independent of any
    page loop. Use from one event loop; the storage requests run on the manager's own threads."""

    def __init__(
        self,
        state: BlobState,
        replica_id: str,
        *,
        duration: float = DEFAULT_DURATION,
        renew_every: float = DEFAULT_RENEW_EVERY,
        clock: Callable[[], float] = clock,
        threads: int = 8,
    ) -> None:
        if not 0 < renew_every < duration / 2:
            raise ConfigError(f"renew a {duration:g} s lease more often than every {duration / 2:g} s")
        self.state = state
        self.replica_id = replica_id
        self.leases = Leases(state, replica_id, duration=duration, clock=clock)
        self.renew_every = renew_every
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="op-sentinel-lease")
        self._held: dict[tuple[str, str], tuple[UnitLease, asyncio.Task[None]]] = {}
        self._last_ids: dict[tuple[str, str], str] = {}

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def held(self) -> list[UnitLease]:
        """The units this replica holds (lost ones are dropped as they are noticed)."""
        return [lease for lease, _ in self._held.values() if not lease.is_lost]

    async def claim(self, account: str, stream: str) -> UnitLease:
        """Own the unit and keep renewing it. LeaseHeld when another replica holds it. Before
        claiming a unit this replica lost, cancel and await the worker that had it."""
        key = (account, stream)
        old = self._held.pop(key, None)
        if old is not None:
            if not old[0].is_lost:
                self._held[key] = old
                return old[0]  # held already
            old[1].cancel()
        lease = await self._run(self.leases.claim, account, stream, lease_id=self._last_ids.get(key))
        lease.bind(asyncio.get_running_loop())
        self._last_ids[key] = lease.lease_id
        task = asyncio.create_task(self._keep(lease), name=f"lease {stream} {account}")
        self._held[key] = (lease, task)
        return lease

    async def _keep(self, lease: UnitLease) -> None:
        """Renew every `renew_every` seconds (a little jitter spreads the units); after a failure,
        retry every few seconds; when the local deadline passes first, the lease is lost."""
        next_in = self.renew_every * random.uniform(0.8, 1.0)
        warned = False
        while not lease.is_lost:
            left = lease.seconds_left()
            if left <= 0:
                lease.mark_lost("ran out before it could be renewed")
                log.warning(
                    "lost the lease of %s (account %s): %s", lease.stream, lease.account, lease.lost_reason
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lease.lost.wait(), timeout=min(next_in, left))
            if lease.is_lost:
                return
            if lease.seconds_left() <= 0:
                continue  # woke too late (a pause): lost, above
            try:
                await self._run(self.leases.renew, lease)
            except LeaseLost as exc:
                log.warning("%s", exc)
                return
            except StoreError as exc:
                if not warned:
                    log.warning("%s; retrying while the lease lasts (%.0f s)", exc, lease.seconds_left())
                    warned = True
                next_in = RETRY_RENEW_AFTER
                continue
            warned = False
            next_in = self.renew_every * random.uniform(0.9, 1.0)

    async def release(self, lease: UnitLease) -> None:
        """Stop renewing and give the unit up (after its worker committed and stopped)."""
        entry = self._held.get(lease.key)
        if entry is not None and entry[0] is lease:
            del self._held[lease.key]
            entry[1].cancel()
        await self._run(self.leases.release, lease)

    async def break_lease(self, account: str, stream: str) -> str | None:
        return await self._run(self.leases.break_lease, account, stream)

    async def membership(self) -> Membership:
        """Every unit with its owner, lease state and checkpoint age, and every replica's last
        heartbeat: one listing request."""
        return await self._run(read_membership, self.state)

    async def heartbeat(self, **info: str) -> None:
        """Tell other replicas this one is alive (they count it in the fair share)."""
        await self._run(heartbeat, self.state, self.replica_id, info)

    async def close(self) -> None:
        """Release every unit still held and remove the heartbeat (best effort: storage may be down;
        then the leases run out by themselves)."""
        entries = list(self._held.values())
        self._held.clear()
        for _, task in entries:
            task.cancel()
        for lease, _ in entries:
            try:
                await self._run(self.leases.release, lease)
            except StoreError as exc:
                log.warning("%s", exc)
        with contextlib.suppress(StoreError):
            await self._run(remove_heartbeat, self.state, self.replica_id)
        self._executor.shutdown(wait=False, cancel_futures=True)
