"""Property tests of the event page parser: whatever bytes a 200 answer holds, `parse_page` returns a
Page (whose items are each an accepted event or a recorded rejection) or raises MalformedResponse,
which the client retries. Nothing else escapes to stop the stream."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.property.propstrategies import events, json_values

from opsentinel.source.page import MalformedResponse, Page, parse_page
from opsentinel.source.redact import REDACTED
from opsentinel.timefmt import parse_rfc3339

FAST = settings(max_examples=80, deadline=None)

envelopes = st.fixed_dictionaries(
    {},
    optional={
        "cursor": st.one_of(st.text(max_size=80), json_values),
        "has_more": st.one_of(st.booleans(), json_values),
        "items": st.one_of(st.lists(st.one_of(events(), json_values), max_size=4), json_values),
    },
)


def _parse(body: bytes) -> Page | None:
    try:
        return parse_page("signinattempts", body, {"cursor": "prev"})
    except MalformedResponse as exc:
        message = str(exc)
    assert "\n" not in message
    return None


def _check(page: Page, items: list[Any]) -> None:
    assert len(page.events) + len(page.rejected) == len(items)
    accepted = iter(page.events)
    rejected = {r.index: r for r in page.rejected}
    for index in range(len(items)):
        if index in rejected:
            assert rejected[index].reason
            assert len(rejected[index].raw_excerpt) <= 200
        else:
            event = next(accepted)
            assert isinstance(event["uuid"], str) and isinstance(event["timestamp"], str)
            orjson.dumps(event)  # every accepted event can be written by every sink


@FAST
@given(body=st.binary(max_size=300))
def test_any_bytes(body: bytes) -> None:
    _parse(body)


@FAST
@given(envelope=envelopes)
def test_any_envelope(envelope: dict[str, Any]) -> None:
    page = _parse(orjson.dumps(envelope))
    if page is not None:
        assert isinstance(page.cursor, str) and page.cursor
        assert isinstance(page.has_more, bool)
        _check(page, envelope["items"])


@FAST
@given(body=envelopes.map(orjson.dumps), cut=st.integers(min_value=1))
def test_a_truncated_body_is_malformed_not_a_crash(body: bytes, cut: int) -> None:
    truncated = body[: cut % len(body)]
    assert _parse(truncated) is None


# JSON that orjson refuses although the grammar allows it: numbers beyond a double and unpaired
# surrogate escapes. Each costs its own event at most, never the page.
hostile_values = st.sampled_from(["1e400", "-1e999", '"\\ud800"', '"a\\udfffb"', '{"\\ud83d": 1}'])


@settings(max_examples=40, deadline=None)
@given(items=st.lists(events(valid_keys=True, huge=False), min_size=1, max_size=4), data=st.data())
def test_values_orjson_refuses_cost_one_event_not_the_page(
    items: list[dict[str, Any]], data: st.DataObject
) -> None:
    bad = data.draw(st.integers(0, len(items) - 1))
    texts = [json.dumps(item) for item in items]
    value = data.draw(hostile_values)
    texts[bad] = texts[bad][:-1] + (", " if items[bad] else "") + f'"odd": {value}}}'
    body = ('{"cursor": "c2", "has_more": true, "items": [' + ", ".join(texts) + "]}").encode()
    page = _parse(body)
    assert page is not None, "one odd value made the whole page unreadable"
    _check(page, items)
    assert bad in {r.index for r in page.rejected}


SECRET = "eyJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJldmVudHMuMXBhc3N3b3JkLmNvbSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


@settings(max_examples=30, deadline=None)
@given(
    event=events(huge=False),
    how=st.sampled_from(["Bearer {s}", "{s}", "token={s};", "Authorization: Bearer {s}"]),
)
def test_a_rejected_item_never_quotes_a_token(event: dict[str, Any], how: str) -> None:
    event = {"leaked": how.format(s=SECRET), **event, "uuid": None}  # first, so it is in the excerpt
    page = _parse(orjson.dumps({"cursor": "c", "has_more": False, "items": [event]}))
    assert page is not None
    (rejection,) = page.rejected
    assert SECRET not in rejection.raw_excerpt
    assert SECRET.rsplit(".", 1)[-1] not in rejection.raw_excerpt
    assert REDACTED in rejection.raw_excerpt


_STAMP_EDITS = (
    lambda t: t,
    lambda t: t.replace(".", ","),  # a comma fraction: datetime.fromisoformat takes it, RFC 3339 not
    lambda t: t.replace("1", "\u0663", 1),  # a non-ASCII digit
    lambda t: t.replace("Z", "z"),
    lambda t: t.replace("Z", "+01:00"),
    lambda t: t.replace("Z", ""),
    lambda t: t.replace("T", " "),
    lambda t: t.replace(":", "", 2),  # the basic format
    lambda t: t[:-4] + "60Z" if "." not in t else t,  # a leap second
)


@FAST
@given(
    moment=st.datetimes(timezones=st.just(UTC)),
    digits=st.integers(min_value=0, max_value=10),
    edit=st.sampled_from(_STAMP_EDITS),
)
def test_every_timestamp_is_read_as_the_general_parser_reads_it(moment: Any, digits: int, edit: Any) -> None:
    """The parser's fast path for `...Z` times gives exactly what `parse_rfc3339` gives, or the same
    rejection."""
    fraction = f"{moment.microsecond:06d}{moment.microsecond % 1000:03d}"[:digits]
    stamp = edit(moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z")
    page = parse_page(
        "auditevents",
        orjson.dumps({"cursor": "c", "has_more": False, "items": [{"uuid": "u", "timestamp": stamp}]}),
        {},
    )
    try:
        expected = parse_rfc3339(stamp)
    except (ValueError, OverflowError):
        assert page.times == [] and len(page.rejected) == 1
    else:
        assert page.times == [expected]
        assert page.times[0].tzinfo is UTC
