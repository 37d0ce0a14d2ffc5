"""Exact request packing and field truncation (pure; no HTTP)."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from opsentinel.sinks.sentinel_chunks import MAX_FIELD_BYTES, MAX_REQUEST_BYTES, plan_chunks, truncate_fields


def record_of_size(size: int, uuid: str = "U") -> dict[str, str]:
    """A record whose compact JSON is exactly `size` bytes."""
    base = len(orjson.dumps({"uuid": uuid, "aux_info": ""}))
    return {"uuid": uuid, "aux_info": "x" * (size - base)}


def test_an_array_of_exactly_1_mib_is_one_request_and_one_byte_more_is_two() -> None:
    # n records of s bytes: 2 + n*s + (n-1) bytes in total.
    n = 8
    s = (MAX_REQUEST_BYTES - 2 - (n - 1)) // n
    rest = MAX_REQUEST_BYTES - 2 - (n - 1) - n * s
    records = [record_of_size(s + (rest if i == 0 else 0), f"U{i}") for i in range(n)]
    plan = plan_chunks(records)
    assert len(plan.chunks) == 1
    assert len(plan.chunks[0].body()) == MAX_REQUEST_BYTES == plan.chunks[0].size

    records[0] = record_of_size(s + rest + 1, "U0")
    plan = plan_chunks(records)
    assert [len(c) for c in plan.chunks] == [7, 1]
    assert all(len(c.body()) <= MAX_REQUEST_BYTES for c in plan.chunks)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=20, max_value=400), min_size=1, max_size=60),
    limit=st.integers(min_value=402, max_value=3000),
)
def test_packing_is_exact_ordered_and_greedy(sizes: list[int], limit: int) -> None:
    records = [record_of_size(size, f"U{i}") for i, size in enumerate(sizes)]
    plan = plan_chunks(records, max_bytes=limit)
    assert plan.oversized == []
    flat = [item.record for chunk in plan.chunks for item in chunk.items]
    assert flat == records
    for chunk, following in zip(plan.chunks, [*plan.chunks[1:], None], strict=True):
        body = chunk.body()
        assert len(body) == chunk.size <= limit
        assert [r["uuid"] for r in json.loads(body)] == [i.record["uuid"] for i in chunk.items]
        if following is not None:  # the next record would not have fitted
            assert chunk.size + 1 + len(following.items[0].data) > limit


def test_halves_split_in_order() -> None:
    (chunk,) = plan_chunks([record_of_size(50, f"U{i}") for i in range(5)]).chunks
    left, right = chunk.halves()
    assert [i.record["uuid"] for i in left.items + right.items] == ["U0", "U1", "U2", "U3", "U4"]
    assert (len(left), len(right)) == (2, 3)


def test_truncation_cuts_only_long_fields_on_character_boundaries() -> None:
    record = {
        "uuid": "U1",
        "aux_info": "ü" * MAX_FIELD_BYTES,  # 2 bytes each: twice the limit
        "details": {"value": "v" * (MAX_FIELD_BYTES + 10)},
        "action": "fill",
        "session": {"ip": "10.0.0.1"},
    }
    cut, fields = truncate_fields(record)
    assert fields == ("aux_info", "details")
    assert cut["aux_info"] == "ü" * (MAX_FIELD_BYTES // 2)
    assert isinstance(cut["details"], str)
    assert len(cut["details"].encode()) == MAX_FIELD_BYTES
    assert cut["details"].startswith('{"value":"vvv')
    assert (cut["uuid"], cut["action"], cut["session"]) == ("U1", "fill", {"ip": "10.0.0.1"})
    assert record["aux_info"] == "ü" * MAX_FIELD_BYTES  # the input is untouched


def test_an_oversized_record_is_cut_to_fit_and_reported() -> None:
    plan = plan_chunks([record_of_size(100, "A"), {"uuid": "B", "aux_info": "x" * 2_000_000}])
    assert plan.oversized == []
    assert plan.truncated == [("B", ("aux_info",))]
    assert [len(c) for c in plan.chunks] == [2]
    assert len(plan.chunks[0].items[1].record["aux_info"]) == MAX_FIELD_BYTES


def test_records_that_cannot_be_sent_are_reported_in_order() -> None:
    too_many_fields = {f"f{i}": "y" * 100_000 for i in range(20)}
    not_json = {"uuid": "C", "aux_id": 2**70}
    plan = plan_chunks([too_many_fields, record_of_size(80, "A"), not_json])
    assert [o.record for o in plan.oversized] == [too_many_fields, not_json]
    assert "after cutting fields to 65536 bytes" in plan.oversized[0].reason
    assert "cannot be serialized" in plan.oversized[1].reason
    assert [i.record["uuid"] for c in plan.chunks for i in c.items] == ["A"]
