"""Lease fencing of the Blob checkpoint store, on Azurite: only the unit's owner can write it.

Each "replica" here is its own client (as separate processes would be). What must hold: a second
owner is refused while the first holds; the storage service refuses the commits, ledger appends and
status writes of an owner that lost the unit (taken over, broken, run out), and a stale ETag; a lease
that ran out may be renewed when nobody else took it; the holder's own clock runs out first; loss is
signalled at once; storage down is a one-line StoreError and costs the lease only at its deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient
from tests.fakes.azurite import Azurite, require_azurite

from opsentinel.checkpoints import blob as blob_module
from opsentinel.checkpoints.blob import BlobCheckpointStore
from opsentinel.checkpoints.codec import checkpoint_json
from opsentinel.checkpoints.leases import LeaseManager, Leases, UnitLease
from opsentinel.checkpoints.membership import read_membership
from opsentinel.errors import CheckpointConflict, LeaseHeld, LeaseLost, StoreError
from opsentinel.state import Checkpoint, StreamStatus

A, S = "ACCT", "auditevents"


class Replica:
    """One replica's view of the state: its own client, store and lease operations."""

    def __init__(
        self, url: str, name: str, *, duration: float = 30, clock: Callable[[], float] | None = None
    ):
        self.store = BlobCheckpointStore.open(url)
        self.name = name
        self.leases = (
            Leases(self.store.state, name, duration=duration)
            if clock is None
            else Leases(self.store.state, name, duration=duration, clock=clock)
        )

    def claim(self, account: str = A, stream: str = S) -> UnitLease:
        return self.leases.claim(account, stream)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def replicas(blob_state_url: str) -> Iterator[Callable[..., Replica]]:
    made: list[Replica] = []

    def make(name: str, **options: object) -> Replica:
        made.append(Replica(blob_state_url, name, **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for replica in made:
        replica.close()


def _stored(replica: Replica) -> Checkpoint | None:
    return replica.store.read(A, S)


def test_a_second_replica_is_refused_while_the_first_holds(
    replicas: Callable[..., Replica],
) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    a.claim()
    with pytest.raises(LeaseHeld) as held:
        b.claim()
    assert held.value.owner == "replica-a"
    assert "replica-a" in str(held.value)
    with pytest.raises(LeaseLost):  # b never held it: b's store refuses before any request
        b.store.commit(Checkpoint(A, S, cursor="b"))
    cp = a.store.commit(Checkpoint(A, S, cursor="a"))
    assert _stored(b) == cp  # reading needs no lease
    (unit,) = read_membership(b.store.state).units
    assert (unit.owner, unit.lease_state, unit.version) == ("replica-a", "leased", 1)


def test_storage_refuses_every_write_of_an_owner_that_was_taken_over(
    replicas: Callable[..., Replica],
) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    lease_a = a.claim()
    first = a.store.commit(Checkpoint(A, S, cursor="a1"))
    a.store.append_ledger(A, S, [("u1", 1)])
    a.store.write_status(StreamStatus(A, S, rows_stored=1))

    assert b.leases.break_lease(A, S) == "replica-a"  # an operator moves the unit
    b.claim()
    assert lease_a.seconds_left() > 20  # a still believes it owns the unit: storage must refuse
    with pytest.raises(LeaseLost, match="taken over"):
        a.store.commit(first.advanced(cursor="a2"))
    assert lease_a.lost.is_set()
    assert lease_a.seconds_left() == 0
    for late_write in (
        lambda: a.store.append_ledger(A, S, [("u2", 2)]),
        lambda: a.store.rewrite_ledger(A, S, []),
        lambda: a.store.write_status(StreamStatus(A, S, last_error="late")),
    ):
        with pytest.raises(LeaseLost):
            late_write()

    second = b.store.commit(first.advanced(cursor="b2"))
    assert _stored(a) == second
    assert b.store.load_ledger(A, S) == [("u1", 1)]
    b.store.append_ledger(A, S, [("u3", 3)])
    assert a.store.load_ledger(A, S) == [("u1", 1), ("u3", 3)]


def test_a_paused_owner_cannot_append_to_the_ledger_after_a_takeover(
    replicas: Callable[..., Replica],
) -> None:
    """The ledger append blob is fenced too: the new owner takes its lease over at claim time."""
    a, b = replicas("replica-a"), replicas("replica-b")
    a.claim()
    a.store.append_ledger(A, S, [("u1", 1)])
    b.leases.break_lease(A, S)
    b.claim()
    with pytest.raises(LeaseLost):
        a.store.append_ledger(A, S, [("late", 2)])  # a's unit lease is still "valid" locally
    assert b.store.load_ledger(A, S) == [("u1", 1)]


def test_a_stale_etag_is_refused_even_with_the_lease(
    replicas: Callable[..., Replica],
) -> None:
    a = replicas("replica-a")
    lease = a.claim()
    cp = a.store.commit(Checkpoint(A, S, cursor="c1"))
    # Someone else writes the unit with the same lease id (a second process sharing it).
    foreign = json.dumps(checkpoint_json(cp.advanced(cursor="foreign", version=2))).encode()
    unit = a.store.state.unit_blob(A, S)
    unit.upload_blob(foreign, overwrite=True, lease=BlobLeaseClient(unit, lease.lease_id))
    with pytest.raises(CheckpointConflict) as info:
        a.store.commit(cp.advanced(cursor="c2"))
    assert not isinstance(info.value, LeaseLost)
    assert unit.download_blob().readall() == foreign  # nothing stored
    assert not lease.is_lost  # still the owner: it re-reads and carries on
    current = a.store.read(A, S)
    assert current is not None
    assert a.store.commit(current.advanced(cursor="c3")).version == 3


def test_after_a_break_renewal_is_refused_and_the_loss_is_signalled(
    replicas: Callable[..., Replica],
) -> None:
    a, operator = replicas("replica-a"), replicas("operator")
    lease = a.claim()
    seen: list[UnitLease] = []
    lease.on_lost(seen.append)
    operator.leases.break_lease(A, S)
    (unit,) = read_membership(operator.store.state).units
    assert unit.lease_state == "broken"
    with pytest.raises(LeaseLost, match="LeaseIsBrokenAndCannotBeRenewed"):
        a.leases.renew(lease)
    assert seen == [lease]
    assert lease.lost.is_set()
    with pytest.raises(LeaseLost):
        a.store.commit(Checkpoint(A, S))
    again = a.claim()  # a broken lease can be claimed again at once
    assert a.store.commit(Checkpoint(A, S, cursor="again")).version == 1
    assert again is not lease


def test_the_holder_counts_its_deadline_from_before_the_request(
    replicas: Callable[..., Replica],
) -> None:
    now = [1000.0]
    a = replicas("replica-a", clock=lambda: now[0])
    lease = a.claim()
    assert lease.seconds_left() == 30
    now[0] += 29.5
    cp = a.store.commit(Checkpoint(A, S, cursor="c1"))
    now[0] += 0.5  # the local deadline: the service would still accept, but the holder stops
    with pytest.raises(LeaseLost, match="ran out"):
        a.store.commit(cp.advanced(cursor="c2"))
    assert _stored(a) == cp
    a.leases.renew(lease)  # nobody else took it
    assert lease.seconds_left() == 30
    assert a.store.commit(cp.advanced(cursor="c2")).version == 2


@pytest.mark.slow
def test_over_one_lease_period(
    replicas: Callable[..., Replica],
) -> None:
    """Real time, one 15 s lease: renewals run beside a page that blocks longer than the lease; an
    unrenewed lease expires on the service, may be renewed if nobody took it, and is lost if
    someone did."""
    a, b = replicas("replica-a", duration=15), replicas("replica-b", duration=15)
    kept_lease = a.claim("ACCT", "itemusages")  # renewed by a LeaseManager below
    alone, taken = a.claim("ACCT", "auditevents"), a.claim("ACCT", "signinattempts")
    a.store.commit(Checkpoint("ACCT", "auditevents", cursor="1"))
    a.leases.release(kept_lease)

    async def scenario() -> UnitLease:
        manager = LeaseManager(a.store.state, "replica-a", duration=15, renew_every=3)
        kept = await manager.claim("ACCT", "itemusages")
        await asyncio.to_thread(time.sleep, 16.5)  # a page stuck for longer than the lease
        assert not kept.lost.is_set()
        assert kept.seconds_left() > 5
        a.store.commit(Checkpoint("ACCT", "itemusages", cursor="kept"))
        await manager.close()
        return kept

    asyncio.run(scenario())
    states = {u.stream: u.lease_state for u in read_membership(b.store.state).units}
    assert states["auditevents"] == "expired"
    assert states["itemusages"] == "available"  # released by the manager on close
    with pytest.raises(LeaseLost, match="ran out"):
        a.store.commit(Checkpoint("ACCT", "auditevents", cursor="late", version=1))

    b.claim("ACCT", "signinattempts")  # after expiry another replica may take it
    a.leases.renew(alone)  # ok: nobody took it
    assert a.store.commit(Checkpoint("ACCT", "auditevents", cursor="2", version=1)).version == 2
    with pytest.raises(LeaseLost):
        a.leases.renew(taken)
    with pytest.raises(LeaseLost):
        a.store.commit(Checkpoint("ACCT", "signinattempts", cursor="late"))


def test_the_manager_signals_a_lost_lease_at_once_and_can_claim_again(
    replicas: Callable[..., Replica],
) -> None:
    a, operator = replicas("replica-a"), replicas("operator")

    async def scenario() -> None:
        manager = LeaseManager(a.store.state, "replica-a", duration=15, renew_every=0.5)
        lease = await manager.claim(A, S)
        called: list[UnitLease] = []
        lease.on_lost(called.append)
        await asyncio.to_thread(operator.leases.break_lease, A, S)
        await asyncio.wait_for(lease.lost.wait(), timeout=5)
        assert called == [lease]
        assert manager.held() == []
        again = await manager.claim(A, S)
        assert not again.lost.is_set()
        assert a.store.commit(Checkpoint(A, S)).version == 1
        await manager.close()

    asyncio.run(scenario())
    (unit,) = read_membership(operator.store.state).units
    assert unit.lease_state == "available"


def test_statuses_are_spared_yet_never_lost(
    replicas: Callable[..., Replica],
) -> None:
    a, reader = replicas("replica-a"), replicas("reader")
    lease = a.claim()
    a.store.write_status(StreamStatus(A, S, rows_stored=1))
    a.store.write_status(StreamStatus(A, S, rows_stored=2, lag_seconds=3.0))  # only counters: kept back
    assert [s.rows_stored for s in reader.store.read_statuses()] == [1]
    cp = a.store.commit(Checkpoint(A, S))  # a commit carries the newest status along
    assert [s.rows_stored for s in reader.store.read_statuses()] == [2]
    a.store.write_status(StreamStatus(A, S, rows_stored=3, last_error="HTTP 401 é"))  # news: now
    assert [(s.rows_stored, s.last_error) for s in reader.store.read_statuses()] == [(3, "HTTP 401 é")]
    a.store.write_status(StreamStatus(A, S, rows_stored=4, last_error="HTTP 401 é"))
    a.leases.release(lease)  # a hand-over writes what was kept back
    assert [s.rows_stored for s in reader.store.read_statuses()] == [4]
    assert reader.store.read(A, S) == cp


def test_membership_lists_units_and_live_replicas_in_one_call(
    replicas: Callable[..., Replica],
) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    a.claim(A, "auditevents")
    a.store.commit(Checkpoint(A, "auditevents"))
    b.claim(A, "itemusages")
    b.leases.release(b.store.state.owned[(A, "itemusages")])
    from opsentinel.checkpoints.membership import heartbeat

    heartbeat(a.store.state, "replica-a", {"units": "1"})
    view = read_membership(b.store.state)
    assert [(u.stream, u.owner, u.leased) for u in view.units] == [
        ("auditevents", "replica-a", True),
        ("itemusages", "replica-b", False),
    ]
    assert view.units[0].checkpoint_updated is not None
    assert view.units[1].checkpoint_updated is None
    assert view.live_replicas(timedelta(seconds=30)) == ["replica-a"]
    assert view.replicas[0].info["units"] == "1"
    assert view.owned_by("replica-a") == [view.units[0]]


def test_the_ledger_rolls_over_before_the_append_blob_is_full(
    replicas: Callable[..., Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_module, "ROLLOVER_BLOCKS", 3)  # 45,000 in earnest
    a = replicas("replica-a")
    lease = a.claim()
    for i in range(7):
        a.store.append_ledger(A, S, [(f"u{i}", i)])
    assert a.store.load_ledger(A, S) == [(f"u{i}", i) for i in range(7)]
    generations = [b.name for b in a.store.state.container.list_blobs(name_starts_with="ledger/")]
    assert generations == [f"ledger/{A}/{S}/{lease.ledger_generation}.jsonl"]  # older ones deleted
    assert int(str(lease.ledger_generation).split("-")[0]) >= 3


@pytest.fixture
def restartable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Azurite]:
    require_azurite()
    server = Azurite(tmp_path / "azurite", in_memory=False).start()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
    yield server
    server.stop()


def test_storage_down_is_a_one_line_error_and_costs_the_lease_only_at_its_deadline(
    restartable: Azurite,
) -> None:
    url = restartable.state_url()
    now = [0.0]
    a = Replica(url, "replica-a", clock=lambda: now[0])
    other = Replica(url, "replica-b")

    async def scenario() -> None:
        manager = LeaseManager(a.store.state, "replica-a", duration=30, renew_every=1, clock=lambda: now[0])
        lease = await manager.claim(A, S)
        await asyncio.to_thread(a.store.commit, Checkpoint(A, S))
        restartable.stop()
        try:
            with pytest.raises(StoreError) as info:
                await asyncio.to_thread(a.leases.renew, lease)
            assert "connection refused" in str(info.value)
            assert "\n" not in str(info.value)
            with pytest.raises(StoreError):
                await asyncio.to_thread(other.claim)
            await asyncio.sleep(2.5)  # renewals fail meanwhile; the lease keeps its time
            assert not lease.is_lost
            now[0] += 30  # its local deadline passes with storage still down
            await asyncio.wait_for(lease.lost.wait(), timeout=10)
            with pytest.raises(LeaseLost, match="ran out"):
                a.store.commit(Checkpoint(A, S, version=1))
        finally:
            restartable.start()
        await manager.close()

    asyncio.run(scenario())
    stored = other.store.read(A, S)
    assert stored is not None
    assert (stored.version, stored.cursor) == (1, None)  # nothing was committed during the outage
    other.claim()  # the unit is free again
    a.close()
    other.close()
