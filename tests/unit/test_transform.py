"""transform: every column of every event type, as the official DCR transform makes it (log_source aside)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsentinel.schema import COLUMN_NAMES, COLUMNS, DCR_INPUT_COLUMNS
from opsentinel.transform import parse_event_time, to_columns, to_dcr_record, to_row, to_rows

DOCS = Path(__file__).resolve().parents[1] / "fixtures" / "onepassword_docs"
NOW = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
U = "56YE2TYN2VFYRLNSHKPW5NVT5E"


def doc(name: str) -> dict[str, Any]:
    data = json.loads((DOCS / f"{name}.json").read_text())
    return data["items"][0] if "items" in data else data


class Dyn:
    """Expected JSON text of a dynamic column: the value as received, keys in received order."""

    def __init__(self, value: Any) -> None:
        self.value = value


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def expected(**non_null: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    row["TimeGenerated"] = NOW
    row.update(non_null)
    return row


def _cases() -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    a2, s2, i2 = (
        doc("v2_auditevents_response_example"),
        doc("v2_signinattempts_response_example"),
        doc("v2_itemusages_response_example"),
    )
    a1, s1, i1 = (
        doc("v1_auditevent_legacy_doc_example"),
        doc("v1_signinattempt_legacy_doc_example"),
        doc("v1_itemusage_legacy_doc_example"),
    )
    health = {
        "uuid": "HEALTH0000000000000000000A",
        "timestamp": "2026-11-25T11:59:00Z",
        "category": "degraded",
        "type": "signinattempts",
        "details": {"message": "429 from the API, retrying", "lag_seconds": 42},
    }
    return {
        "v2 audit": (
            "auditevents",
            a2,
            expected(
                uuid_s=U,
                timestamp=at("2020-06-11T19:32:50+00:00"),
                location=Dyn(a2["location"]),
                actor_uuid=U,
                actor_details=Dyn(a2["actor_details"]),
                actor_account_uuid=U,
                account_uuid=U,
                object_uuid=U,
                object_details=Dyn(a2["object_details"]),
                aux_id=123,
                aux_uuid=U,
                aux_details=Dyn(a2["aux_details"]),
                aux_info="<string>",
                session=Dyn(a2["session"]),
                log_source="auditevents",
            ),
        ),
        "v2 sign-in": (
            "signinattempts",
            s2,
            expected(
                uuid_s=U,
                session_uuid=U,
                timestamp=at("2020-06-11T19:32:50+00:00"),
                country="France",
                category="firewall_failed",
                action_type="continent_blocked",
                details=Dyn({"value": "Europe"}),
                target_user=Dyn(s2["target_user"]),
                client=Dyn(s2["client"]),
                location=Dyn(s2["location"]),
                account_uuid=U,
                user_type="user",
                user_account_uuid=U,
                log_source="signinattempts",
            ),
        ),
        "v2 item usage": (
            "itemusages",
            i2,
            expected(
                uuid_s=U,
                timestamp=at("2020-06-11T19:32:50+00:00"),
                client=Dyn(i2["client"]),
                location=Dyn(i2["location"]),
                account_uuid=U,
                user_type="user",
                user_account_uuid=U,
                action="reveal",
                used_version=123,
                vault_uuid=U,
                item_uuid=U,
                user=Dyn(i2["user"]),
                log_source="itemusages",
            ),
        ),
        "v1 audit (legacy doc)": (
            "auditevents",
            a1,
            expected(
                uuid_s=U,
                timestamp=at("2023-03-15T19:33:50+00:00"),
                location=Dyn(a1["location"]),
                actor_uuid="4HCGRGYCTRQFBMGVEGTABYDU2V",
                actor_details=Dyn(a1["actor_details"]),  # keeps the doc's "uuid:" key as received
                action="join",
                object_type="gm",
                object_uuid="pf8soyakgngrphytsyjed4ae3u",
                aux_id=9277034,
                aux_uuid="K6VFYDCJKHGGDI7QFAXX65LCDY",
                aux_details=Dyn(a1["aux_details"]),
                aux_info="A",
                session=Dyn(a1["session"]),
                log_source="auditevents",  # the official guess says itemusages (aux_id is set)
            ),
        ),
        "v1 sign-in (legacy doc)": (
            "signinattempts",
            s1,
            expected(
                uuid_s=U,
                session_uuid="A5K6COGVRVEJXJW3XQZGS7VAMM",
                timestamp=at("2021-03-01T19:32:50+00:00"),
                country="France",
                category="firewall_failed",
                action_type="continent_blocked",
                details=Dyn({"value": "Europe"}),
                target_user=Dyn(s1["target_user"]),
                client=Dyn(s1["client"]),  # V1's client.ip, as received
                log_source="signinattempts",
            ),
        ),
        "v1 item usage (legacy doc)": (
            "itemusages",
            i1,
            expected(
                uuid_s=U,
                timestamp=at("2020-06-11T19:32:50+00:00"),
                client=Dyn(i1["client"]),
                action="secure-copy",
                used_version=0,  # zero is a value, not NULL
                vault_uuid="VZSYVT2LGHTBWBQGUJAIZVRABM",
                item_uuid="SDGD3I4AJYO6RMHRK8DYVNFIDZ",
                user=Dyn(i1["user"]),
                log_source="itemusages",
            ),
        ),
        "health": (
            "healthevents",
            health,
            expected(
                uuid_s="HEALTH0000000000000000000A",
                timestamp=at("2026-11-25T11:59:00+00:00"),
                category="degraded",
                action_type="signinattempts",
                details=Dyn(health["details"]),
                log_source="healthevents",
            ),
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("column", COLUMN_NAMES)
@pytest.mark.parametrize("case", list(CASES))
def test_each_column_of_each_event_type(case: str, column: str) -> None:
    log_source, event, want = CASES[case]
    got = dict(zip(COLUMN_NAMES, to_row(log_source, event, NOW), strict=True))[column]
    wanted = want[column]
    if isinstance(wanted, Dyn):
        assert isinstance(got, str)
        assert list(json.loads(got).items()) == list(wanted.value.items())
    else:
        assert got == wanted
        assert type(got) is type(wanted)


def test_a_row_has_the_33_columns_in_table_order() -> None:
    row = to_row("auditevents", doc("v2_auditevents_response_example"), NOW)
    assert len(row) == len(COLUMNS) == 33


def test_log_source_is_the_stream_never_the_field_presence_guess() -> None:
    audit_with_aux = {"uuid": "A", "timestamp": "2024-12-02T11:54:21Z", "action": "grant", "aux_id": 6}
    signin_without_country = {"uuid": "S", "timestamp": "2024-12-02T11:54:21Z", "category": "success"}
    usage_without_version = {"uuid": "I", "timestamp": "2024-12-02T11:54:21Z", "action": "fill"}
    last = COLUMN_NAMES.index("log_source")
    assert to_row("auditevents", audit_with_aux, NOW)[last] == "auditevents"
    assert to_row("signinattempts", signin_without_country, NOW)[last] == "signinattempts"
    assert to_row("itemusages", usage_without_version, NOW)[last] == "itemusages"


def value(column: str, event: dict[str, Any], source: str = "auditevents") -> Any:
    return to_row(source, event, NOW)[COLUMN_NAMES.index(column)]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2024-12-02T11:54:21.24645983Z", datetime(2024, 12, 2, 11, 54, 21, 246459, tzinfo=UTC)),
        ("2022-10-24T21:16:52.827288935Z", datetime(2022, 10, 24, 21, 16, 52, 827288, tzinfo=UTC)),
        ("2021-08-30T18:57:42.484Z", datetime(2021, 8, 30, 18, 57, 42, 484000, tzinfo=UTC)),
        ("2021-08-11T14:28:03Z", datetime(2021, 8, 11, 14, 28, 3, tzinfo=UTC)),
        ("2021-06-11T16:32:50-03:00", datetime(2021, 6, 11, 19, 32, 50, tzinfo=UTC)),
        ("2020-01-01T00:00:00+05:30", datetime(2019, 12, 31, 18, 30, tzinfo=UTC)),
        ("2020-01-01T00:00:00-00:00", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01t00:00:00.1z", datetime(2020, 1, 1, 0, 0, 0, 100000, tzinfo=UTC)),
        ("2020-01-01 00:00:00Z", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01T00:00:00", datetime(2020, 1, 1, tzinfo=UTC)),  # no offset: UTC, as Kusto reads it
        ("2020-13-01T00:00:00Z", None),
        ("2020-01-01T00:00:62Z", None),
        ("2020-01-01", None),
        ("yesterday", None),
        ("", None),
        (1718123570, None),
    ],
)
def test_timestamp_is_parsed_to_utc_microseconds(text: Any, want: datetime | None) -> None:
    got = value("timestamp", {"timestamp": text})
    assert got == want
    if got is not None:
        assert got.utcoffset() == timedelta(0)


def test_timestamp_given_as_datetime_is_stored_in_utc() -> None:
    local = datetime(2020, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=3)))
    assert value("timestamp", {"timestamp": local}) == datetime(2020, 1, 1, tzinfo=UTC)
    assert parse_event_time(datetime(2020, 1, 1)) == datetime(2020, 1, 1, tzinfo=UTC)


def test_time_generated_is_the_injected_ingestion_time_in_utc() -> None:
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    got = to_row("auditevents", {}, plus_two)[COLUMN_NAMES.index("TimeGenerated")]
    assert got == NOW
    assert got.tzinfo == UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        to_row("auditevents", {}, datetime(2026, 1, 1))


def test_source_system_is_never_set() -> None:
    assert value("SourceSystem", {"SourceSystem": "x", "uuid": "u"}) is None


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("ok", "ok"),
        ("", ""),
        (True, "true"),
        (False, "false"),
        (12, "12"),
        (1.5, "1.5"),
        (2.0, "2"),
        ({"a": [1, "b"]}, '{"a":[1,"b"]}'),
        ([1, 2], "[1,2]"),
        (None, None),
    ],
)
def test_string_columns_take_the_kusto_tostring_form(raw: Any, want: str | None) -> None:
    assert value("aux_info", {"aux_info": raw}) == want
    assert value("action_type", {"type": raw}) == want


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (7, 7),
        (0, 0),
        (-3, -3),
        (7.0, 7),
        ("42", 42),
        (" 42 ", 42),
        ("-5", -5),
        (7.5, None),
        ("4.2", None),
        ("x", None),
        (True, None),
        (False, None),
        ([1], None),
        ({"a": 1}, None),
        (2**63 - 1, 2**63 - 1),
        (2**63, None),
        (-(2**63) - 1, None),
        (None, None),
    ],
)
def test_int_columns_accept_integral_values_only(raw: Any, want: int | None) -> None:
    got_aux = value("aux_id", {"aux_id": raw})
    got_used = value("used_version", {"used_version": raw}, "itemusages")
    assert got_aux == want
    assert got_used == want
    assert type(got_aux) is type(want)


@pytest.mark.parametrize(
    "raw", [{"b": 2, "a": 1}, [1, {"x": None}], "plain", 3, 0, False, {}, [], {"big": 2**70}]
)
def test_dynamic_columns_are_the_value_as_received_in_json(raw: Any) -> None:
    got = value("details", {"details": raw}, "signinattempts")
    assert isinstance(got, str)
    assert json.loads(got) == raw
    if isinstance(raw, dict):
        assert list(json.loads(got)) == list(raw)  # key order kept


def test_absent_and_null_are_both_null_in_every_column() -> None:
    nulls = {c.name: None for c in COLUMNS}
    nulls["uuid"], nulls["type"] = None, None
    absent = to_row("itemusages", {}, NOW)
    explicit = to_row("itemusages", nulls, NOW)
    assert absent == explicit
    assert [v for v in absent if v is not None] == [NOW, "itemusages"]


@pytest.mark.parametrize(
    ("event", "want_type", "want_account"),
    [
        ({"target_user": {"user_type": "user", "user_account_uuid": "T"}}, "user", "T"),
        ({"user": {"user_type": "external_user", "user_account_uuid": "U"}}, "external_user", "U"),
        (
            {"target_user": {"user_type": "user", "user_account_uuid": "T"}, "user": {"user_type": "x"}},
            "user",
            "T",
        ),
        ({"target_user": {"user_type": None}, "user": {"user_type": "external_user"}}, "external_user", None),
        ({"target_user": "not an object", "user": {"user_account_uuid": "U"}}, None, "U"),
        ({"target_user": {"user_type": 3}}, "3", None),
        ({"target_user": {"uuid": "x"}}, None, None),
    ],
)
def test_user_type_and_account_coalesce_target_user_then_user(
    event: dict[str, Any], want_type: str | None, want_account: str | None
) -> None:
    assert value("user_type", event, "signinattempts") == want_type
    assert value("user_account_uuid", event, "signinattempts") == want_account


def test_to_rows_and_to_columns_agree_with_to_row() -> None:
    events = [CASES[c][1] for c in CASES]
    rows = to_rows("auditevents", events, NOW)
    assert rows == [to_row("auditevents", e, NOW) for e in events]
    columns = to_columns("auditevents", events, NOW)
    assert len(columns) == 33
    assert [tuple(r) for r in zip(*columns, strict=True)] == rows
    assert to_rows("auditevents", [], NOW) == []


def test_the_event_is_not_modified() -> None:
    event = doc("v2_signinattempts_response_example")
    before = json.dumps(event)
    to_row("signinattempts", event, NOW)
    to_dcr_record("signinattempts", event)
    assert json.dumps(event) == before


# --- to_dcr_record ----------------------------------------------------------------------------

DCR_NAMES = [c.name for c in DCR_INPUT_COLUMNS]


@pytest.mark.parametrize("case", list(CASES))
def test_dcr_record_has_the_declared_fields_present_plus_log_source(case: str) -> None:
    log_source, event, _ = CASES[case]
    record = to_dcr_record(log_source, event)
    assert record["log_source"] == log_source
    present = [n for n in DCR_NAMES if event.get(n) is not None]
    assert list(record) == [*present, "log_source"]
    for name in present:
        assert record[name] == event[name]
    orjson.dumps(record)  # JSON-ready


def test_dcr_record_keeps_raw_names_and_drops_undeclared_and_null_fields() -> None:
    event = {
        "uuid": "U1",
        "type": "credentials_ok",
        "timestamp": "2024-12-02T11:54:21.24645983Z",
        "country": None,
        "not_in_the_api": 1,
        "log_source": "spoofed",
    }
    record = to_dcr_record("signinattempts", event)
    assert record == {
        "uuid": "U1",
        "timestamp": "2024-12-02T11:54:21.24645983Z",  # the string as received, 9 digits and all
        "type": "credentials_ok",
        "log_source": "signinattempts",
    }


def test_dcr_record_writes_datetime_objects_as_rfc3339() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=1)))
    record = to_dcr_record("healthevents", {"uuid": "h", "timestamp": moment, "details": {"at": moment}})
    assert record["timestamp"] == "2026-01-02T02:04:05.000006Z"
    assert record["details"] == {"at": "2026-01-02T02:04:05.000006Z"}


# --- any event maps without error ---------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from([*DCR_NAMES, "extra", "user_type"])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=10), st.sampled_from(["auditevents", "itemusages", "x"]))
def test_any_json_event_maps_to_33_typed_values(event: dict[str, Any], source: str) -> None:
    row = to_row(source, event, NOW)
    assert len(row) == 33
    for column, v in zip(COLUMNS, row, strict=True):
        if v is None:
            continue
        if column.kind == "string":
            assert isinstance(v, str)
        elif column.kind == "int":
            assert type(v) is int
            assert -(2**63) <= v < 2**63
        elif column.kind == "datetime":
            assert isinstance(v, datetime)
            assert v.utcoffset() == timedelta(0)
        else:
            json.loads(v)
    json.dumps(to_dcr_record(source, event), allow_nan=False)
