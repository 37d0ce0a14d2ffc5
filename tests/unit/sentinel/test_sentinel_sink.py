"""SentinelSink.write against the local Logs Ingestion fake, through the real SDK and azure-identity."""

from __future__ import annotations

import logging
import stat
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.azure_identity import FakeManagedIdentity
from tests.fakes.azure_ingestion import MAX_BODY, FakeLogsIngestion, new_dcr_id
from tests.unit.sentinel.samples import STREAMS, events
from tests.unit.sentinel.support import MakeSink, read_dead_letters

from opsentinel.errors import AuthError, ConfigError, RateLimited, RetriableError
from opsentinel.sinks.base import Batch
from opsentinel.sinks.sentinel_chunks import MAX_FIELD_BYTES


def batch(stream: str, evs: list[dict[str, Any]]) -> Batch:
    return Batch(stream, evs, datetime.now(UTC))


def uuids(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["uuid"] for r in records)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    assert text.strip() == text
    return text


# --- delivery ---------------------------------------------------------------------------------


def test_every_record_arrives_once_in_gzip_requests_of_at_most_1_mib(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    sink = make_sink()  # credential=None: DefaultAzureCredential -> the fake managed identity
    sent: dict[str, list[dict[str, Any]]] = {s: events(s, 2500) for s in STREAMS}
    for stream, evs in sent.items():
        sink.write(batch(stream, evs))

    records = fake_ingestion.records
    assert uuids(records) == Counter(e["uuid"] for evs in sent.values() for e in evs)
    assert all(n == 1 for n in uuids(records).values())
    by_uuid = {r["uuid"]: r for r in records}
    for stream, evs in sent.items():
        assert {by_uuid[e["uuid"]]["log_source"] for e in evs} == {stream}
    uploads = fake_ingestion.uploads
    assert len(uploads) > len(STREAMS)  # the batches did need several requests
    for upload in uploads:
        assert upload.status == 204
        assert upload.content_encoding == "gzip"
        assert upload.content_length <= MAX_BODY
        assert upload.uncompressed_size is not None
        assert upload.uncompressed_size <= MAX_BODY


def test_requests_are_packed_up_to_the_limit(make_sink: MakeSink, fake_ingestion: FakeLogsIngestion) -> None:
    sink = make_sink(max_concurrency=1)
    sink.write(batch("auditevents", events("auditevents", 4000)))
    sizes = [u.uncompressed_size or 0 for u in fake_ingestion.uploads]
    assert len(sizes) >= 2
    # Greedy packing: each full request lacks less than one record's size (< 2 KB here).
    assert all(MAX_BODY - 2048 < size <= MAX_BODY for size in sizes[:-1])


def test_records_carry_only_declared_fields_and_log_source(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    event = {**events("signinattempts", 1)[0], "undeclared_field": "x", "session_uuid": None}
    make_sink().write(batch("signinattempts", [event]))
    (record,) = fake_ingestion.records
    assert "undeclared_field" not in record
    assert "session_uuid" not in record
    assert record["type"] == event["type"]
    assert record["log_source"] == "signinattempts"


def test_empty_batch_sends_nothing(make_sink: MakeSink, fake_ingestion: FakeLogsIngestion) -> None:
    make_sink().write(batch("itemusages", []))
    assert fake_ingestion.uploads == []


def test_a_checkpoint_is_refused_the_sink_is_not_transactional(make_sink: MakeSink) -> None:
    from opsentinel.state import Checkpoint

    sink = make_sink()
    assert sink.transactional is False
    assert sink.name == "sentinel"
    with pytest.raises(ValueError, match="not transactional"):
        sink.write(batch("itemusages", events("itemusages", 1)), Checkpoint("acct", "itemusages"))


# --- retries ----------------------------------------------------------------------------------


def test_429_with_retry_after_waits_as_told_then_delivers(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, sleeps: list[float]
) -> None:
    fake_ingestion.fail_next(429, retry_after=7, code="TooManyRequests")
    evs = events("itemusages", 10)
    make_sink().write(batch("itemusages", evs))
    assert sleeps == [7.0]
    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs)
    assert [u.status for u in fake_ingestion.uploads] == [429, 204]


def test_429_without_retry_after_backs_off_then_delivers(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, sleeps: list[float]
) -> None:
    fake_ingestion.fail_next(429, times=2)
    evs = events("itemusages", 10)
    make_sink().write(batch("itemusages", evs))
    assert sleeps == [0.5, 1.0]  # TEST_RETRY: exponential from 0.5 s, no jitter
    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs)


def test_throttling_that_outlasts_the_tries_raises_rate_limited(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    fake_ingestion.fail_next(429, times=4, retry_after=3)
    with pytest.raises(RateLimited) as caught:
        make_sink().write(batch("itemusages", events("itemusages", 3)))
    assert caught.value.retry_after == 3.0
    assert fake_ingestion.records == []


def test_503_bursts_are_survived(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, sleeps: list[float]
) -> None:
    sink = make_sink()
    evs = events("auditevents", 30)
    fake_ingestion.fail_next(503, times=3, code="ServiceUnavailable")
    sink.write(batch("auditevents", evs[:15]))
    fake_ingestion.fail_next(500, times=2)
    sink.write(batch("auditevents", evs[15:]))
    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs)
    assert sleeps == [0.5, 1.0, 2.0, 0.5, 1.0]


def test_an_outage_longer_than_the_tries_raises_retriable_and_the_batch_can_be_resent(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    sink = make_sink()
    evs = events("signinattempts", 5)
    fake_ingestion.fail_next(503, times=4)
    with pytest.raises(RetriableError) as caught:
        sink.write(batch("signinattempts", evs))
    assert caught.value.status == 503
    assert fake_ingestion.records == []
    sink.write(batch("signinattempts", evs))  # what the pipeline does later
    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs)


def test_dropped_connections_are_retried(make_sink: MakeSink, fake_ingestion: FakeLogsIngestion) -> None:
    fake_ingestion.drop_next(2)
    evs = events("itemusages", 8)
    make_sink().write(batch("itemusages", evs))
    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs)


def test_a_crashed_endpoint_is_retriable_and_delivery_resumes_after_restart(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    sink = make_sink()
    evs = events("itemusages", 6)
    sink.write(batch("itemusages", evs[:3]))
    fake_ingestion.crash()
    with pytest.raises(RetriableError, match="kept failing"):
        sink.write(batch("itemusages", evs[3:]))
    fake_ingestion.restart()
    sink.write(batch("itemusages", evs[3:]))
    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs)


def test_a_read_timeout_is_retriable(make_sink: MakeSink, fake_ingestion: FakeLogsIngestion) -> None:
    fake_ingestion.latency = 0.5
    with pytest.raises(RetriableError, match="timed out"):
        make_sink(timeout=0.1).write(batch("itemusages", events("itemusages", 1)))


# --- refused records --------------------------------------------------------------------------


def test_400_isolates_the_bad_records_into_the_dead_letter_file(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    evs = events("auditevents", 100)
    bad = {evs[17]["uuid"], evs[62]["uuid"]}
    fake_ingestion.reject_when(lambda r: r.get("uuid") in bad, code="InvalidPayload", message="bad value")
    make_sink().write(batch("auditevents", evs))

    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs if e["uuid"] not in bad)
    letters = read_dead_letters(state_dir)
    assert {d["record"]["uuid"] for d in letters} == bad
    for letter in letters:
        assert letter["stream"] == "auditevents"
        assert "400" in letter["reason"]
        assert "InvalidPayload" in letter["reason"]
        assert "bad value" in letter["reason"]
        assert letter["record"]["log_source"] == "auditevents"
        datetime.fromisoformat(letter["time"].replace("Z", "+00:00"))
    assert stat.S_IMODE((state_dir / "dead-letter.jsonl").stat().st_mode) == 0o600


def test_413_splits_the_request_in_halves_and_delivers_everything(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    fake_ingestion.fail_next(413, code="ContentLengthLimitExceeded", message="too large")
    evs = events("signinattempts", 40)
    make_sink().write(batch("signinattempts", evs))
    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs)
    assert [u.records for u in fake_ingestion.uploads] == [0, 20, 20]
    assert read_dead_letters(state_dir) == []


def test_an_oversized_field_is_cut_to_64_kib_and_delivered(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    big = {**events("auditevents", 1)[0], "aux_info": "é" * 700_000}  # 1.4 MB of UTF-8
    make_sink().write(batch("auditevents", [big]))
    (record,) = fake_ingestion.records
    assert record["uuid"] == big["uuid"]
    assert len(record["aux_info"].encode()) <= MAX_FIELD_BYTES
    assert big["aux_info"].startswith(record["aux_info"])
    assert read_dead_letters(state_dir) == []


def test_a_record_too_large_even_after_cutting_is_dead_lettered_and_the_rest_delivered(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    evs = events("auditevents", 3)
    fields: tuple[str, ...] = ("actor_uuid", "actor_type", "actor_account_uuid", "account_uuid", "action")
    fields += ("object_type",)
    fields += ("object_uuid", "aux_uuid", "aux_info", "session_uuid", "category", "type", "country")
    fields += ("vault_uuid", "item_uuid", "aux_details")
    huge = {**evs[1], **{f: "z" * 100_000 for f in fields}}  # 16 declared fields x 64 KiB > 1 MiB
    make_sink().write(batch("auditevents", [evs[0], huge, evs[2]]))
    assert uuids(fake_ingestion.records) == Counter([evs[0]["uuid"], evs[2]["uuid"]])
    (letter,) = read_dead_letters(state_dir)
    assert letter["record"]["uuid"] == huge["uuid"]
    assert "after cutting fields" in letter["reason"]


# --- errors a user must fix -------------------------------------------------------------------


def test_401_is_a_one_line_user_error(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, fake_managed_identity: FakeManagedIdentity
) -> None:
    sink = make_sink()
    sink.write(batch("itemusages", events("itemusages", 1)))
    fake_managed_identity.revoke_all()  # the sink's cached token is no longer valid
    with pytest.raises(AuthError) as caught:
        sink.write(batch("itemusages", events("itemusages", 1, start=1)))
    text = one_line(caught.value)
    assert "401" in text
    assert "tenant" in text


def test_403_names_the_role_and_the_dcr(make_sink: MakeSink, fake_ingestion: FakeLogsIngestion) -> None:
    fake_ingestion.deny_role()
    with pytest.raises(AuthError) as caught:
        make_sink().write(batch("itemusages", events("itemusages", 1)))
    assert one_line(caught.value) == (
        "Azure refused the upload (403 OperationFailed): grant the identity the 'Monitoring Metrics "
        f"Publisher' role on the DCR {fake_ingestion.dcr_id} (role changes can take up to 30 minutes)"
    )


def test_404_names_the_dcr_and_stream(make_sink: MakeSink, fake_ingestion: FakeLogsIngestion) -> None:
    wrong = new_dcr_id()
    with pytest.raises(ConfigError) as caught:
        make_sink(dcr_id=wrong).write(batch("itemusages", events("itemusages", 1)))
    text = one_line(caught.value)
    assert text.startswith(
        f"no DCR {wrong} / stream Custom-OnePasswordEventLogs_CL at {fake_ingestion.endpoint} (404"
    )
    with pytest.raises(ConfigError, match="stream Custom-Other_CL"):
        make_sink(stream_name="Custom-Other_CL").write(batch("itemusages", events("itemusages", 1)))


def test_an_untrusted_certificate_is_a_user_error(make_sink: MakeSink, tmp_path: Path) -> None:
    import trustme

    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with pytest.raises(ConfigError) as caught:
        make_sink(connection_verify=str(other_ca)).write(batch("itemusages", events("itemusages", 1)))
    assert one_line(caught.value).startswith("TLS verification failed for the Logs Ingestion endpoint")


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://my-dce.eastus-1.ingest.monitor.azure.com", "must be an https:// URL"),
        ("my-dce.eastus-1.ingest.monitor.azure.com", "must be an https:// URL"),
        ("https://my-dce.eastus-1.ingest.monitor.azure.com/dataCollectionRules/x", "without a path"),
        ("https://user:secret@my-dce.example", "must not contain a user name or password"),
    ],
)
def test_bad_endpoints_are_refused_in_one_line(make_sink: MakeSink, endpoint: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_sink(endpoint=endpoint)
    assert expected in one_line(caught.value)
    assert "secret" not in str(caught.value)


def test_a_bad_dcr_id_is_refused(make_sink: MakeSink) -> None:
    with pytest.raises(ConfigError, match="immutable id"):
        make_sink(dcr_id="/subscriptions/x/resourceGroups/y/providers/Microsoft.Insights/dcr")


# --- concurrency ------------------------------------------------------------------------------


def test_requests_of_a_batch_go_out_concurrently_but_bounded(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    fake_ingestion.hold_until(3)  # each request waits until three are in flight together
    evs = events("itemusages", 300)
    make_sink(max_concurrency=3, max_request_bytes=16_384).write(batch("itemusages", evs))
    assert len(fake_ingestion.uploads) >= 9
    assert fake_ingestion.max_in_flight == 3
    assert uuids(fake_ingestion.records) == Counter(e["uuid"] for e in evs)


def test_write_is_thread_safe_and_the_bound_is_shared(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    sink = make_sink(max_concurrency=2, max_request_bytes=32_768)
    bad = set()
    work: list[tuple[str, list[dict[str, Any]]]] = []
    for n, stream in enumerate(STREAMS * 2):
        evs = events(stream, 60, start=n * 60)
        bad.add(evs[5]["uuid"])
        work.append((stream, evs))
    fake_ingestion.reject_when(lambda r: r.get("uuid") in bad)
    fake_ingestion.fail_next(503, times=3)
    errors: list[BaseException] = []

    def run(stream: str, evs: list[dict[str, Any]]) -> None:
        try:
            sink.write(batch(stream, evs))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    expected = Counter(e["uuid"] for _, evs in work for e in evs if e["uuid"] not in bad)
    assert uuids(fake_ingestion.records) == expected
    assert {d["record"]["uuid"] for d in read_dead_letters(state_dir)} == bad
    assert fake_ingestion.max_in_flight <= 2


# --- secrets ----------------------------------------------------------------------------------


def test_logs_never_hold_tokens_or_record_contents(
    make_sink: MakeSink,
    fake_ingestion: FakeLogsIngestion,
    fake_managed_identity: FakeManagedIdentity,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    evs = events("signinattempts", 20)
    fake_ingestion.fail_next(429)
    fake_ingestion.fail_next(503)
    fake_ingestion.reject_when(lambda r: r["uuid"] == evs[3]["uuid"])
    make_sink().write(batch("signinattempts", evs))
    text = caplog.text
    assert fake_managed_identity.issued  # a token was used...
    for token in fake_managed_identity.issued:
        assert token not in text  # ...and never logged
    assert "x-ms-request-id=" in text
    assert "x-ms-error-code=" in text
    emails = {e["target_user"]["email"] for e in evs}
    assert not any(email in text for email in emails)


def test_events_before_the_boundary_go_to_the_history_stream(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    from tests.fakes.azure_ingestion import HISTORY_STREAM, STREAM

    from opsentinel.timefmt import parse_rfc3339

    evs = events("auditevents", 40)
    times = [parse_rfc3339(e["timestamp"]) for e in evs]
    boundary = sorted(times)[15]
    resolved: list[int] = []
    sink = make_sink(history_stream=HISTORY_STREAM)
    receipt = sink.write(
        Batch("auditevents", evs, datetime.now(UTC), times=times, boundary=boundary,
              on_resolved=lambda idx, ok: resolved.extend(idx))
    )  # fmt: skip
    assert receipt.delivered == 40
    assert sorted(resolved) == list(range(40)), "every position reported once, mapped back to the batch"
    old = {e["uuid"] for e, t in zip(evs, times, strict=True) if t < boundary}
    assert {r["uuid"] for r in fake_ingestion.records_of(HISTORY_STREAM)} == old
    assert {r["uuid"] for r in fake_ingestion.records_of(STREAM)} == {e["uuid"] for e in evs} - old
    # without a boundary (health rows, a stream with no first run recorded) everything is current
    sink.write(Batch("auditevents", events("auditevents", 3, start=100), datetime.now(UTC)))
    assert len(fake_ingestion.records_of(STREAM)) == 40 - len(old) + 3
