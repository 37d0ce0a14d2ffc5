"""The stored forms every checkpoint store shares: checkpoint and status JSON, ledger lines, names.

The file store and the Blob store write the same bytes, so a state can be read by either and one
test of the format covers both. Decoders take `where` ("the checkpoint file PATH", "the checkpoint
blob NAME in URL") and raise StoreError naming it: a record that cannot be parsed is never a silent
fresh start.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from opsentinel.errors import StoreError
from opsentinel.state import Checkpoint, StreamStatus

__all__ = [
    "FORMAT_VERSION",
    "checkpoint_from_json",
    "checkpoint_json",
    "decode_name",
    "decode_record",
    "encode_name",
    "ledger_line",
    "parse_ledger",
    "status_from_json",
    "status_json",
]

FORMAT_VERSION: Final = 1
_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def encode_name(name: str) -> str:
    """An injective, path-safe form of `name` ("%" for the empty name): anything but letters, digits,
    `-` and `_` is percent-encoded, so no account or stream can escape its directory or prefix."""
    if not name:
        return "%"
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in name.encode())


def decode_name(text: str) -> str:
    """The inverse of encode_name (ValueError for text it cannot have produced)."""
    if text == "%":
        return ""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    name = out.decode()
    if encode_name(name) != text:
        raise ValueError(f"{text!r} is not an encoded name")
    return name


def time_text(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


def decode_record(raw: bytes, where: str) -> dict[str, Any]:
    """A stored JSON object with a `format_version` this op-sentinel knows, or StoreError."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StoreError(f"{where} is corrupt (not JSON); fix or remove it") from exc
    if not isinstance(data, dict):
        raise StoreError(f"{where} is corrupt (not a JSON object); fix or remove it")
    version = data.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise StoreError(f"{where} is corrupt (no format_version); fix or remove it")
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{where} has format_version {version}, newer than this op-sentinel "
            f"knows ({FORMAT_VERSION}); upgrade op-sentinel"
        )
    return data


def checkpoint_json(cp: Checkpoint) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "account": cp.account,
        "stream": cp.stream,
        "cursor": cp.cursor,
        "newest_event_time": time_text(cp.newest_event_time),
        "events_delivered": cp.events_delivered,
        "version": cp.version,
        "updated_at": time_text(cp.updated_at),
        "backfill": cp.backfill,
        "live_start": time_text(cp.live_start),
        "first_run_at": time_text(cp.first_run_at),
        "caught_up_at": time_text(cp.caught_up_at),
        "events_duplicate": cp.events_duplicate,
        "events_dead_lettered": cp.events_dead_lettered,
    }


def checkpoint_from_json(data: dict[str, Any], where: str) -> Checkpoint:
    try:
        return Checkpoint(
            account=_typed(data, "account", str),
            stream=_typed(data, "stream", str),
            cursor=_optional(data, "cursor", str),
            newest_event_time=_time(data, "newest_event_time"),
            events_delivered=_typed(data, "events_delivered", int),
            version=_typed(data, "version", int),
            updated_at=_time(data, "updated_at"),
            backfill=_optional(data, "backfill", dict),
            live_start=_time(data, "live_start"),
            first_run_at=_time(data, "first_run_at"),
            caught_up_at=_time(data, "caught_up_at"),
            events_duplicate=_optional(data, "events_duplicate", int) or 0,
            events_dead_lettered=_optional(data, "events_dead_lettered", int) or 0,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{where} is corrupt ({exc}); fix or remove it") from exc


def status_json(st: StreamStatus) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "account": st.account,
        "stream": st.stream,
        "last_success": time_text(st.last_success),
        "last_error": st.last_error,
        "last_error_at": time_text(st.last_error_at),
        "lag_seconds": st.lag_seconds,
        "rows_stored": st.rows_stored,
        "updated_at": time_text(st.updated_at),
        "health_at": time_text(st.health_at),
        "health_category": st.health_category,
    }


def status_from_json(data: dict[str, Any], where: str) -> StreamStatus:
    try:
        lag = data.get("lag_seconds")
        if lag is not None and (isinstance(lag, bool) or not isinstance(lag, int | float)):
            raise TypeError("lag_seconds is not a number")
        return StreamStatus(
            account=_typed(data, "account", str),
            stream=_typed(data, "stream", str),
            last_success=_time(data, "last_success"),
            last_error=_optional(data, "last_error", str),
            last_error_at=_time(data, "last_error_at"),
            lag_seconds=None if lag is None else float(lag),
            rows_stored=_typed(data, "rows_stored", int),
            updated_at=_time(data, "updated_at"),
            health_at=_time(data, "health_at"),
            health_category=_optional(data, "health_category", str),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{where} is corrupt ({exc}); fix or remove it") from exc


def ledger_line(entries: Sequence[tuple[str, int]]) -> bytes:
    """One ledger log line: `{"u": [uuids], "t": [epoch microseconds]}` and a newline."""
    return orjson.dumps({"u": [u for u, _ in entries], "t": [t for _, t in entries]}) + b"\n"


def parse_ledger(raw: bytes, where: str) -> tuple[list[tuple[str, int]], int]:
    """The entries of a ledger log and the length of its whole lines. A last line without its newline
    was cut short by a crash, so it was never acknowledged: it is ignored."""
    entries: list[tuple[str, int]] = []
    whole = 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            data = orjson.loads(line)
            uuids, times = data["u"], data["t"]
            if len(uuids) != len(times):
                raise ValueError("u and t differ in length")
            entries.extend((str(u), int(t)) for u, t in zip(uuids, times, strict=True))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{where} is corrupt ({exc}); fix or remove it") from exc
        whole += len(line)
    return entries, whole


def _typed(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} is not a {kind.__name__}")
    return value


def _optional(data: dict[str, Any], key: str, kind: type) -> Any:
    return None if data.get(key) is None else _typed(data, key, kind)


def _time(data: dict[str, Any], key: str) -> datetime | None:
    text = _optional(data, key, str)
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{key} has no time zone")
    return moment.astimezone(UTC)
