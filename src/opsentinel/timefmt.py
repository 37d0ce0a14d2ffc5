"""RFC 3339 times and human durations, parsed and formatted in one place.

The Events API sends timestamps with 0 to 9 fraction digits and `Z` or a numeric offset; Python keeps
microseconds, so digits past the sixth are dropped (ordering is unaffected at that precision for our use).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time into an aware UTC datetime; ValueError if it is not one.

    A time without an offset is rejected: it would be ambiguous.
    """
    if not isinstance(text, str):
        raise ValueError("not a string")
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time: {text[:40]!r}")
    date, clock, fraction, offset = m.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    tz = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{date}T{clock}.{micro}{tz}")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        raise ValueError(f"not a valid date-time: {text[:40]!r}") from None


def format_rfc3339(moment: datetime) -> str:
    """UTC, `Z` suffix, microseconds only when non-zero: `2026-11-18T12:00:00Z`."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    utc = moment.astimezone(UTC)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `36h`, `7d` (a number and one unit); ValueError otherwise."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not a duration (use a number and s, m, h or d, e.g. 7d): {str(text)[:40]!r}")
    value = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    return timedelta(seconds=value)


def format_duration(delta: timedelta) -> str:
    """Compact human form: `45s`, `12m`, `3h`, `2d`, or `1h30m`."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "-" + format_duration(-delta)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return "".join(parts)
