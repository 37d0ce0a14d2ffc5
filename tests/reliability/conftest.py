"""Fixtures for the crash and fault tests."""

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


@pytest.fixture
def forkserver() -> Iterator[ForkServer]:
    server = ForkServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def forks() -> Iterator[ForkServer]:
    """One fork server for a whole module (its commands run one after another)."""
    server = ForkServer()
    try:
        yield server
    finally:
        server.close()
