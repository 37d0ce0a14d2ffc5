"""RFC 3339 timestamps as integer nanoseconds since the epoch, exact to the nanosecond.

Parsing accepts what the API accepts: a date, `T`, a time, an optional fraction of 1-9 digits and a
`Z` or `±hh:mm` offset. Formatting follows the API's per-stream habits: audit events use Go's
RFC3339Nano (trailing zeros trimmed), item usages milliseconds, sign-ins whole seconds, always `Z`.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

NS = 1_000_000_000

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC) - _EPOCH


def parse_ns(text: str) -> int:
    """Nanoseconds since the epoch for an RFC 3339 string; ValueError if it is not one."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:64]!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)  # raises on 2023-02-30 etc.
    seconds = (when - _EPOCH) // _ONE_SECOND
    if m.group(8) is None:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError(f"bad offset in {text[:64]!r}")
        offset = (oh * 3600 + om * 60) * (1 if m.group(9) == "+" else -1)
        seconds -= offset
    fraction = m.group(7) or ""
    return seconds * NS + int(fraction.ljust(9, "0") or "0")


_DAYS: dict[int, str] = {}  # day number -> "YYYY-MM-DDT"; formatting is on the hot path of every page


def _prefix(seconds: int) -> str:
    day, rest = divmod(seconds, 86_400)
    date = _DAYS.get(day)
    if date is None:
        t = time.gmtime(seconds)
        date = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        if len(_DAYS) > 100_000:
            _DAYS.clear()
        _DAYS[day] = date
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{date}{hour:02d}:{minute:02d}:{second:02d}"


def format_seconds(ns: int) -> str:
    """`2021-08-11T14:28:03Z` (truncates any fraction)."""
    return _prefix(ns // NS) + "Z"


def format_millis(ns: int) -> str:
    """`2021-08-30T18:57:42.484Z` (always three digits, as item usages are sent)."""
    seconds, rest = divmod(ns, NS)
    return f"{_prefix(seconds)}.{rest // 1_000_000:03d}Z"


def format_nanos(ns: int) -> str:
    """Go RFC3339Nano: `2024-12-02T11:54:21.24645983Z`, trailing zeros trimmed, no dot when zero."""
    seconds, rest = divmod(ns, NS)
    if rest == 0:
        return _prefix(seconds) + "Z"
    return f"{_prefix(seconds)}.{f'{rest:09d}'.rstrip('0')}Z"


def to_ns(when: datetime) -> int:
    """Nanoseconds since the epoch for an aware datetime (naive means UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000


def from_ns(ns: int) -> datetime:
    """An aware UTC datetime (microsecond precision) for nanoseconds since the epoch."""
    return datetime.fromtimestamp(ns // 1000 / 1_000_000, tz=UTC)
