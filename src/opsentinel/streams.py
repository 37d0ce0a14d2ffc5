"""The three Events API streams, declared as data.

Each stream is named exactly as its API path and its token feature. One generic reader consumes this
table; nothing subclasses a stream.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamSpec:
    """One Events API stream: its name (= token feature = `log_source`) and its endpoints."""

    name: str
    path: str
    v1_path: str

    @property
    def feature(self) -> str:
        return self.name


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("auditevents", "/api/v2/auditevents", "/api/v1/auditevents"),
    StreamSpec("signinattempts", "/api/v2/signinattempts", "/api/v1/signinattempts"),
    StreamSpec("itemusages", "/api/v2/itemusages", "/api/v1/itemusages"),
)

STREAM_NAMES: tuple[str, ...] = tuple(s.name for s in STREAMS)

# The token features the Events API knows (one per stream), in the order the API lists them.
FEATURES: tuple[str, ...] = ("auditevents", "itemusages", "signinattempts")

INTROSPECT_V2_PATH = "/api/v2/auth/introspect"
INTROSPECT_V1_PATH = "/api/auth/introspect"

# Not an API stream: rows the connector writes about its own health (see docs/health.md).
HEALTH_LOG_SOURCE = "healthevents"


def get_stream(name: str) -> StreamSpec:
    """The spec for `name`; raises KeyError for anything but the three stream names."""
    for spec in STREAMS:
        if spec.name == name:
            return spec
    raise KeyError(name)
