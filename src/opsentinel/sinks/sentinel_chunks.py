"""Requests of at most 1 MiB: serialize records once, pack them greedily, split a request in halves.

The Logs Ingestion API refuses a call over 1,048,576 bytes (413 ContentLengthLimitExceeded) and
truncates any field value over 64 KB. We keep the *uncompressed* JSON array of every request within
the limit, counting the brackets and commas exactly (the SDK's own chunking ignores them), so the
gzip body sent is smaller still.

A record too large for a request on its own first has every field over 64 KiB cut to 64 KiB (Azure
would have cut it there anyway, so nothing is lost that Azure would keep). If it is still too large,
it is reported as oversized for the caller to dead-letter: one record never blocks a stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "MAX_FIELD_BYTES",
    "MAX_REQUEST_BYTES",
    "Chunk",
    "ChunkPlan",
    "Item",
    "Oversized",
    "plan_chunks",
    "truncate_fields",
]

MAX_REQUEST_BYTES: Final = 1_048_576
MAX_FIELD_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class Item:
    """One record, its compact JSON serialization (what goes between the commas) and its position
    among the records given to `plan_chunks`."""

    record: Mapping[str, Any]
    data: bytes
    index: int = -1


@dataclass(frozen=True)
class Chunk:
    """The records of one request. `size` is the exact byte length of `body()`."""

    items: tuple[Item, ...]

    @property
    def size(self) -> int:
        return array_size(len(self.items), sum(len(i.data) for i in self.items))

    def body(self) -> bytes:
        """The JSON array `[r1,r2,...]` (UTF-8, no whitespace)."""
        return b"[" + b",".join(i.data for i in self.items) + b"]"

    def halves(self) -> tuple[Chunk, Chunk]:
        """Two non-empty chunks, first half and second half; needs at least two items."""
        if len(self.items) < 2:
            raise ValueError("cannot split a chunk of fewer than two records")
        middle = len(self.items) // 2
        return Chunk(self.items[:middle]), Chunk(self.items[middle:])

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Oversized:
    """A record that cannot be sent: too large even after truncation, or not serializable."""

    record: Mapping[str, Any]
    reason: str
    index: int = -1


@dataclass(frozen=True)
class ChunkPlan:
    chunks: list[Chunk]
    oversized: list[Oversized]
    # (record uuid or None, names of the fields cut to MAX_FIELD_BYTES)
    truncated: list[tuple[str | None, tuple[str, ...]]]


def array_size(count: int, payload: int) -> int:
    """Bytes of a JSON array of `count` elements whose serializations total `payload` bytes."""
    return 2 + payload + max(count - 1, 0)


def _cut_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def truncate_fields(
    record: Mapping[str, Any], limit: int = MAX_FIELD_BYTES
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A copy of `record` with every field over `limit` bytes cut to `limit`, and the cut fields' names.

    A string keeps its first `limit` UTF-8 bytes (never half a character). An object or array over
    the limit (as compact JSON) is replaced by its JSON text cut the same way, as Azure stores an
    over-long dynamic value; smaller fields are untouched.
    """
    out = dict(record)
    cut: list[str] = []
    for name, value in record.items():
        if isinstance(value, str):
            if len(value) * 4 > limit and len(value.encode("utf-8")) > limit:
                out[name] = _cut_utf8(value, limit)
                cut.append(name)
        elif isinstance(value, Mapping | list | tuple):
            text = orjson.dumps(value).decode("utf-8")
            if len(text.encode("utf-8")) > limit:
                out[name] = _cut_utf8(text, limit)
                cut.append(name)
    return out, tuple(cut)


def _serialize(record: Mapping[str, Any]) -> bytes | None:
    try:
        return orjson.dumps(record)
    except (orjson.JSONEncodeError, TypeError):
        return None


def plan_chunks(
    records: Iterable[Mapping[str, Any]],
    max_bytes: int = MAX_REQUEST_BYTES,
    field_limit: int = MAX_FIELD_BYTES,
) -> ChunkPlan:
    """Pack `records`, in order, into chunks whose JSON array is at most `max_bytes` bytes.

    Greedy: a chunk is closed when the next record would not fit. Records that cannot fit alone
    after `truncate_fields` (or cannot be serialized) are returned in `oversized`, in order.
    """
    chunks: list[Chunk] = []
    oversized: list[Oversized] = []
    truncated: list[tuple[str | None, tuple[str, ...]]] = []
    current: list[Item] = []
    current_payload = 0
    for index, record in enumerate(records):
        data = _serialize(record)
        if data is None:
            oversized.append(Oversized(record, "record cannot be serialized as JSON", index))
            continue
        if array_size(1, len(data)) > max_bytes:
            smaller, cut = truncate_fields(record, field_limit)
            data = _serialize(smaller)
            if data is None or array_size(1, len(data)) > max_bytes:
                size = "?" if data is None else str(len(data))
                oversized.append(
                    Oversized(
                        record,
                        f"record is {size} bytes after cutting fields to {field_limit} bytes; "
                        f"a request may hold at most {max_bytes} bytes",
                        index,
                    )
                )
                continue
            uuid = record.get("uuid")
            truncated.append((uuid if isinstance(uuid, str) else None, cut))
            record = smaller
        if current and array_size(len(current) + 1, current_payload + len(data)) > max_bytes:
            chunks.append(Chunk(tuple(current)))
            current, current_payload = [], 0
        current.append(Item(record, data, index))
        current_payload += len(data)
    if current:
        chunks.append(Chunk(tuple(current)))
    return ChunkPlan(chunks, oversized, truncated)
