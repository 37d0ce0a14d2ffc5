"""Fixtures for the Sentinel sink tests: the local Azure fakes and a sink factory aimed at them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.azure_ingestion import (  # noqa: F401 - fixtures
    FakeLogsIngestion,
    azure_ca,
    azure_ca_path,
    fake_ingestion,
    fake_managed_identity,
)
from tests.unit.sentinel.support import TEST_RETRY, MakeSink

from opsentinel.sinks.sentinel import SentinelSink


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_sink(
    fake_ingestion: FakeLogsIngestion,  # noqa: F811
    azure_ca_path: str,  # noqa: F811
    state_dir: Path,
    sleeps: list[float],
) -> Iterator[MakeSink]:
    """Build SentinelSinks aimed at the fake, with DefaultAzureCredential (-> fake managed identity)."""
    made: list[SentinelSink] = []

    def make(**overrides: Any) -> SentinelSink:
        endpoint = overrides.pop("endpoint", fake_ingestion.endpoint)
        dcr_id = overrides.pop("dcr_id", fake_ingestion.dcr_id)
        kwargs: dict[str, Any] = {
            "dead_letter_dir": state_dir,
            "connection_verify": azure_ca_path,
            "retry": TEST_RETRY,
            "sleep": sleeps.append,
        }
        kwargs.update(overrides)
        sink = SentinelSink(endpoint, dcr_id, **kwargs)
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close()
