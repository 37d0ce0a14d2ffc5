"""What the Sentinel sink does when Azure refuses: the request itself (stop, nothing dead-lettered,
few requests) or some records (only those, proven bad beside accepted ones, go to dead letters); and
`resend-dead-letters`, which sends them again exactly once when the cause is fixed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.azure_ingestion import FakeLogsIngestion
from tests.unit.sentinel.samples import events
from tests.unit.sentinel.support import MakeSink, read_dead_letters

from opsentinel.errors import ConfigError
from opsentinel.resend import RESENT_FILE, resend_dead_letters
from opsentinel.sinks.base import Batch
from opsentinel.sinks.sentinel_deadletter import DeadLetterFile


def batch(stream: str, evs: list[dict[str, Any]], resolved: Any = None) -> Batch:
    return Batch(stream, evs, datetime.now(UTC), on_resolved=resolved)


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_a_refusal_of_every_request_stops_with_one_line_and_no_dead_letters(
    size: int, make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    """A DCR whose transform or schema refuses op-sentinel's records: the refusal names no field, but
    every part of the page is refused alike (and a health record too)."""
    fake_ingestion.reject_when(
        lambda r: True, code="InvalidPayload", message="The request could not be processed."
    )
    acks: list[tuple[list[int], bool]] = []
    with pytest.raises(ConfigError, match="refuses op-sentinel's uploads") as info:
        make_sink().write(
            batch("auditevents", events("auditevents", size), lambda i, a: acks.append((list(i), a)))
        )
    assert "\n" not in str(info.value)
    assert "nothing was dead-lettered" in str(info.value)
    assert not read_dead_letters(state_dir)
    assert not fake_ingestion.records
    assert acks == []  # nothing counts as delivered
    assert len(fake_ingestion.uploads) <= 8, "bounded: never split down to single records"


def test_a_refusal_naming_the_stream_stops_at_the_first_request(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    fake_ingestion.reject_when(
        lambda r: True, code="InvalidStream", message="Stream Custom-X is not declared."
    )
    with pytest.raises(ConfigError, match="InvalidStream"):
        make_sink().write(batch("auditevents", events("auditevents", 500)))
    assert len(fake_ingestion.uploads) == 1
    assert not read_dead_letters(state_dir)


def test_only_records_refused_beside_accepted_ones_are_dead_lettered(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    evs = events("itemusages", 1000)
    bad = {evs[17]["uuid"], evs[640]["uuid"]}
    fake_ingestion.reject_when(lambda r: r.get("uuid") in bad, code="InvalidPayload", message="bad value")
    acks: Counter[bool] = Counter()

    def resolved(indexes: Sequence[int], accepted: bool) -> None:
        acks[accepted] += len(indexes)

    receipt = make_sink().write(batch("itemusages", evs, resolved))
    assert (receipt.delivered, receipt.dead_lettered) == (998, 2)
    assert acks == Counter({True: 998, False: 2})
    assert {d["record"]["uuid"] for d in read_dead_letters(state_dir)} == bad
    assert len(fake_ingestion.records) == 998


def test_a_lone_bad_record_is_dead_lettered_when_azure_takes_a_health_record(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path
) -> None:
    (ev,) = events("signinattempts", 1)
    fake_ingestion.reject_when(
        lambda r: r.get("uuid") == ev["uuid"], code="InvalidPayload", message="bad value"
    )
    receipt = make_sink().write(batch("signinattempts", [ev]))
    assert receipt.dead_lettered == 1
    assert [d["record"]["uuid"] for d in read_dead_letters(state_dir)] == [ev["uuid"]]
    probes = [r for r in fake_ingestion.records if r.get("log_source") == "healthevents"]
    assert len(probes) == 1 and probes[0]["type"] == "probe"


def test_dead_letters_are_sent_again_exactly_once_when_the_cause_is_fixed(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path, tmp_path: Path
) -> None:
    evs = events("auditevents", 300)
    bad = {e["uuid"] for e in evs[::50]}
    fake_ingestion.reject_when(lambda r: r.get("uuid") in bad)
    make_sink().write(batch("auditevents", evs))
    assert len(read_dead_letters(state_dir)) == len(bad)

    # Not fixed yet: nothing leaves the file, nothing is sent twice.
    summary = resend_dead_letters(make_sink(dead_letter_dir=tmp_path / "scratch"), state_dir)
    assert (summary.found, summary.resent, summary.still_refused) == (len(bad), 0, len(bad))
    assert summary.refusal is not None and "400" in summary.refusal
    assert len(read_dead_letters(state_dir)) == len(bad)

    fake_ingestion.accept_all()
    summary = resend_dead_letters(make_sink(dead_letter_dir=tmp_path / "scratch"), state_dir)
    assert (summary.resent, summary.still_refused) == (len(bad), 0)
    assert read_dead_letters(state_dir) == []
    again = resend_dead_letters(make_sink(dead_letter_dir=tmp_path / "scratch"), state_dir)
    assert again.found == 0
    counts = Counter(r["uuid"] for r in fake_ingestion.records if r.get("log_source") == "auditevents")
    assert set(counts) == {e["uuid"] for e in evs}
    assert max(counts.values()) == 1


def test_a_resend_that_died_half_way_is_finished_without_sending_twice(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, state_dir: Path, tmp_path: Path
) -> None:
    letters = DeadLetterFile(state_dir)
    evs = events("itemusages", 6)
    for ev in evs:
        letters.add(stream="itemusages", reason="400", record={**ev, "log_source": "itemusages"})
    present = letters.read()
    # The first resend got three records accepted and recorded, then died before taking them out.
    (state_dir / RESENT_FILE).write_text("".join(f"{d.key}\n" for d in present[:3]))
    summary = resend_dead_letters(make_sink(dead_letter_dir=tmp_path / "scratch"), state_dir)
    assert (summary.found, summary.resent, summary.still_refused) == (6, 6, 0)
    assert sorted(r["uuid"] for r in fake_ingestion.records) == sorted(e["uuid"] for e in evs[3:])
    assert letters.read() == []
    assert not (state_dir / RESENT_FILE).exists()


def test_lines_appended_while_a_resend_rewrites_the_file_are_kept(state_dir: Path) -> None:
    letters = DeadLetterFile(state_dir)
    for i in range(5):
        letters.add(stream="auditevents", reason="400", record={"uuid": f"U{i}"})
    first = letters.read()
    other = DeadLetterFile(state_dir)  # another process's view of the same file
    other.add(stream="auditevents", reason="400", record={"uuid": "late"})
    assert letters.remove({first[0].key, first[1].key}) == 2
    other.add(stream="auditevents", reason="400", record={"uuid": "later"})
    assert [d.record["uuid"] for d in letters.read()] == ["U2", "U3", "U4", "late", "later"]
    assert (state_dir / "dead-letter.jsonl").stat().st_mode & 0o077 == 0
