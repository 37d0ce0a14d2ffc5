"""Fixtures for the security tests: the local Azure fakes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.fakes.azure_ingestion import (  # noqa: F401 - fixtures
    azure_ca,
    azure_ca_path,
    fake_ingestion,
    fake_managed_identity,
)
from tests.reliability.relhelp import ForkServer


@pytest.fixture(scope="module")
def forks() -> Iterator[ForkServer]:
    """`op-sentinel` processes started from a pre-imported fork server (see tests/reliability)."""
    server = ForkServer()
    try:
        yield server
    finally:
        server.close()
