"""`op-sentinel resend-dead-letters`: send the dead-lettered records again, once the cause is fixed.

Exactly once. Each record Azure accepts is recorded durably (`<state>/dead-letter.resent`, one key a
line, fsync'ed) the moment its request is acknowledged, and only then is its line taken out of the
dead-letter file. A resend that dies half-way is resumed by the next one, which skips every record
already recorded: the one re-send left is a request in flight when the process died. Records Azure
still refuses stay in the file (a resend never adds a line for them). Only one resend runs at a time
(a lock beside the file); a `run` may keep appending meanwhile.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsentinel.errors import ConfigError, StoreError
from opsentinel.sinks.base import Batch
from opsentinel.sinks.sentinel import SentinelSink
from opsentinel.sinks.sentinel_deadletter import DeadLetter, DeadLetterFile
from opsentinel.writerlock import WriterLock

__all__ = ["ResendSummary", "resend_dead_letters"]

log = logging.getLogger("opsentinel")

RESENT_FILE = "dead-letter.resent"


@dataclass(frozen=True)
class ResendSummary:
    """`found` dead letters, `resent` of them accepted now (or by a resend that died), `still_refused`
    kept in the file; `refusal` is Azure's answer when it refused whole requests (all of a stream's
    records stay then)."""

    found: int
    resent: int
    still_refused: int
    refusal: str | None = None


def resend_dead_letters(sink: SentinelSink, state_dir: Path) -> ResendSummary:
    """Send every record of `<state_dir>/dead-letter.jsonl` through `sink` (whose own dead-letter
    directory must be elsewhere); raises what the sink raises when Azure refuses the requests
    themselves or keeps failing (what it accepted until then is taken out of the file)."""
    letters = DeadLetterFile(state_dir)
    with WriterLock(state_dir / "dead-letter.resend.lock", f"the dead letters in {state_dir}"):
        journal = state_dir / RESENT_FILE
        done = _read_journal(journal)  # accepted by a resend that died before taking them out
        present = letters.read()
        pending = [d for d in present if d.key not in done]
        refused = 0
        refusal = None
        try:
            for stream, history in sorted({(d.stream, d.history) for d in pending}):
                part = [d for d in pending if (d.stream, d.history) == (stream, history)]
                try:
                    refused += _resend(sink, stream, history, part, journal, done)
                except ConfigError as exc:  # every request refused: the cause is not fixed yet
                    refused += sum(1 for d in part if d.key not in done)
                    refusal = str(exc)
        finally:
            letters.remove(done)
        journal.unlink(missing_ok=True)  # every key in it is out of the file now
    resent = len(done & {d.key for d in present})
    return ResendSummary(found=len(present), resent=resent, still_refused=refused, refusal=refusal)


def _resend(
    sink: SentinelSink, stream: str, history: bool, part: Sequence[DeadLetter], journal: Path, done: set[str]
) -> int:
    """Send one stream's dead letters (to the history stream if they were on their way there);
    returns how many Azure still refuses."""
    refused: list[int] = []

    def resolved(indexes: Sequence[int], accepted: bool) -> None:
        if not accepted:
            refused.extend(indexes)
            return
        keys = [part[i].key for i in indexes]
        _append_journal(journal, keys)
        done.update(keys)

    if history and sink.history_stream is None:
        raise ConfigError(
            f"{len(part)} dead letter(s) of {stream} belong in the history stream; give --history-stream"
        )
    now = datetime.now(UTC)
    # The boundary routes the records: after all of them to the history stream, none otherwise.
    boundary = now + timedelta(days=1) if history else None
    times = [now] * len(part)
    sink.write(
        Batch(stream, [d.record for d in part], now, times=times, on_resolved=resolved, boundary=boundary)
    )
    return len(refused)


def _read_journal(path: Path) -> set[str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return {line.strip().decode() for line in raw.splitlines(keepends=True) if line.endswith(b"\n")}


def _append_journal(path: Path, keys: Sequence[str]) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, "".join(f"{k}\n" for k in keys).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot record re-sent dead letters in {path}: {exc.strerror or exc}") from exc


def scratch_dead_letter_dir() -> Path:
    """Where the resend's own sink puts records refused again (they stay in the real file anyway)."""
    return Path(tempfile.mkdtemp(prefix="op-sentinel-resend-"))
