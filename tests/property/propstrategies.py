"""Hypothesis strategies for what the Events API could send: JSON values of every type, event objects
with the real field names (missing, null, wrong types, huge, unicode, unknown fields), timestamps in
every RFC 3339 variant and near the edges of the calendar."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from opsentinel.schema import DCR_INPUT_COLUMNS

FIELDS = tuple(c.name for c in DCR_INPUT_COLUMNS)

# Scalars as orjson hands them over: ints up to 2**64 - 1 (larger ones arrive as floats), finite floats.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

huge_strings = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["x", "é", "🔑", "\x00", "\u2028"]), st.integers(0, 70_000)
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """Date-times as the API writes them (0-9 fraction digits, Z or an offset), across the calendar
    edges: year 1, year 9999, leap days, impossible dates."""
    if draw(st.booleans()):  # the first or the last day the calendar has, or a leap day
        year, month, day = draw(st.sampled_from([(1, 1, 1), (9999, 12, 31), (2024, 2, 29), (2023, 2, 29)]))
    else:
        year, month, day = draw(st.integers(1, 9999)), draw(st.integers(1, 13)), draw(st.integers(1, 31))
    hour, minute, second = draw(st.integers(0, 24)), draw(st.integers(0, 59)), draw(st.integers(0, 60))
    fraction = draw(
        st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(lambda d: "." + d))
    )
    zone = draw(
        st.one_of(
            st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
            st.builds(
                lambda s, h, m: f"{s}{h:02d}:{m:02d}",
                st.sampled_from("+-"),
                st.integers(0, 23),
                st.integers(0, 59),
            ),
        )
    )
    sep = draw(st.sampled_from(["T", "t", " "]))
    return f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"


timestamps = st.one_of(rfc3339(), st.text(max_size=30), json_values)

uuids = st.one_of(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=26, max_size=26),
    st.text(min_size=1, max_size=30),
)


@st.composite
def events(draw: st.DrawFn, *, valid_keys: bool = False, huge: bool = True) -> dict[str, Any]:
    """An event object: any subset of the real fields, each with an arbitrary value (now and then a
    huge string), plus unknown fields. With `valid_keys`, `uuid` and `timestamp` are well formed."""
    event: dict[str, Any] = {}
    for name in FIELDS:
        if draw(st.integers(0, 2)) == 0:
            big = huge and draw(st.integers(0, 9)) == 0
            event[name] = draw(huge_strings) if big else draw(json_values)
    if valid_keys or draw(st.booleans()):
        event["uuid"] = draw(uuids) if valid_keys else draw(st.one_of(uuids, json_values))
        event["timestamp"] = draw(rfc3339()) if valid_keys else draw(timestamps)
    for name in ("target_user", "user"):
        if draw(st.integers(0, 3)) == 0:
            event[name] = draw(
                st.dictionaries(
                    st.sampled_from(["user_type", "user_account_uuid", "email", "name"]), json_values
                )
            )
    event.update(
        draw(st.dictionaries(st.text(max_size=15).filter(lambda k: k not in FIELDS), json_values, max_size=3))
    )
    return event
