"""The membership view of a Blob state: every unit and every replica, from one listing request.

`read_membership` lists the container once with metadata: each unit's owner (the replica id its
metadata names), lease state (as the service reports it: `leased`, `available`, `expired`,
`broken`, `breaking`), checkpoint version and commit time, and stream status; and each replica's
heartbeat. That is what `status` shows and what balancing decides by.

Heartbeats: a replica that owns nothing yet is invisible in the units, so a new replica could never
get its fair share. Each replica therefore writes an empty blob `replicas/<id>` every balance
interval (one request per replica, not per unit); its Last-Modified (the service's clock) says when it
was last alive. `Membership.live_replicas` counts those seen recently; comparing with the listing's
own newest heartbeat (the caller's, written just before) keeps host clock skew out of it.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from opsentinel.checkpoints.blobaccess import (
    CHECKPOINTS,
    META_LEDGER,
    META_OWNER,
    META_STATUS,
    META_UPDATED,
    META_VERSION,
    REPLICAS,
    BlobState,
    status_from_metadata,
)
from opsentinel.checkpoints.codec import decode_name, encode_name
from opsentinel.errors import StoreError
from opsentinel.state import StreamStatus

__all__ = ["Membership", "ReplicaInfo", "UnitInfo", "heartbeat", "read_membership", "remove_heartbeat"]


@dataclass(frozen=True)
class UnitInfo:
    """One (account, stream) unit as the listing shows it. `owner` is the replica that holds it
    when `leased`, otherwise the last one that did."""

    account: str
    stream: str
    owner: str | None
    lease_state: str
    version: int
    checkpoint_updated: datetime | None
    last_modified: datetime | None
    status: StreamStatus | None
    ledger_generation: str | None

    @property
    def leased(self) -> bool:
        return self.lease_state == "leased"

    def checkpoint_age(self, now: datetime) -> timedelta | None:
        return None if self.checkpoint_updated is None else now - self.checkpoint_updated


@dataclass(frozen=True)
class ReplicaInfo:
    replica_id: str
    last_seen: datetime
    info: dict[str, str]


@dataclass(frozen=True)
class Membership:
    units: list[UnitInfo]
    replicas: list[ReplicaInfo]

    def live_replicas(self, max_age: timedelta, now: datetime | None = None) -> list[str]:
        """Replica ids whose heartbeat is at most `max_age` older than `now` (default: the newest
        heartbeat listed, i.e. the caller's own when it beat just before listing)."""
        if not self.replicas:
            return []
        ref = now or max(r.last_seen for r in self.replicas)
        return sorted(r.replica_id for r in self.replicas if ref - r.last_seen <= max_age)

    def owned_by(self, replica_id: str) -> list[UnitInfo]:
        return [u for u in self.units if u.leased and u.owner == replica_id]


def read_membership(state: BlobState) -> Membership:
    """One `list_blobs(include=metadata)` over the container (a page per 5,000 blobs)."""
    units: list[UnitInfo] = []
    replicas: list[ReplicaInfo] = []
    try:
        for item in state.container.list_blobs(include=["metadata"]):
            name: str = item.name
            if name.startswith(CHECKPOINTS):
                unit = _unit(state, item)
                if unit is not None:
                    units.append(unit)
            elif name.startswith(REPLICAS):
                with contextlib.suppress(ValueError):
                    replicas.append(
                        ReplicaInfo(
                            decode_name(name[len(REPLICAS) :]),
                            _utc(item.last_modified),
                            dict(item.metadata or {}),
                        )
                    )
    except ResourceNotFoundError:
        return Membership([], [])  # no container yet: nothing has run
    except AzureError as exc:
        raise state.fail(exc, "list the units") from exc
    units.sort(key=lambda u: (u.account, u.stream))
    replicas.sort(key=lambda r: r.replica_id)
    return Membership(units, replicas)


def _unit(state: BlobState, item: Any) -> UnitInfo | None:
    parts = item.name[len(CHECKPOINTS) :].split("/")
    if len(parts) != 2 or not parts[1].endswith(".json"):
        return None  # not ours
    try:
        account, stream = decode_name(parts[0]), decode_name(parts[1][: -len(".json")])
    except ValueError:
        return None
    meta: dict[str, str] = dict(item.metadata or {})
    where = f"the checkpoint blob {item.name} in {state.location}"
    status = None
    if meta.get(META_STATUS):
        with contextlib.suppress(StoreError):  # one bad status must not hide the other units
            status = status_from_metadata(meta[META_STATUS], where)
    updated = None
    if meta.get(META_UPDATED):
        with contextlib.suppress(ValueError):
            updated = _utc(datetime.fromisoformat(meta[META_UPDATED]))
    version = int(meta[META_VERSION]) if meta.get(META_VERSION, "").isdigit() else 0
    return UnitInfo(
        account=account,
        stream=stream,
        owner=meta.get(META_OWNER) or None,
        lease_state=str(item.lease.state or "available"),
        version=version,
        checkpoint_updated=updated,
        last_modified=_utc(item.last_modified) if item.last_modified else None,
        status=status,
        ledger_generation=meta.get(META_LEDGER) or None,
    )


def heartbeat(state: BlobState, replica_id: str, info: dict[str, str] | None = None) -> datetime:
    """Write this replica's heartbeat blob; returns its Last-Modified (the service's clock)."""
    metadata = {"host": socket.gethostname(), **(info or {})}
    blob = state.container.get_blob_client(f"{REPLICAS}{encode_name(replica_id)}")
    try:
        try:
            result = blob.upload_blob(b"", overwrite=True, metadata=metadata)
        except ResourceNotFoundError:
            state.ensure_container()
            result = blob.upload_blob(b"", overwrite=True, metadata=metadata)
    except AzureError as exc:
        raise state.fail(exc, f"write the heartbeat of replica {replica_id}") from exc
    return _utc(result["last_modified"])


def remove_heartbeat(state: BlobState, replica_id: str) -> None:
    blob = state.container.get_blob_client(f"{REPLICAS}{encode_name(replica_id)}")
    try:
        blob.delete_blob()
    except ResourceNotFoundError:
        pass
    except AzureError as exc:
        raise state.fail(exc, f"remove the heartbeat of replica {replica_id}") from exc


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
