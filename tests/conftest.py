"""Fixtures every test folder can use: Azurite (the Azure Storage emulator) on loopback.

`azurite` is one in-memory Blob service for the whole session (started on first use, stopped at the
end); `blob_state_url` gives a test a fresh container URL on it, with AZURE_STORAGE_CONNECTION_STRING
set the way a user would set it. `azurite_queue` is the Queue service, started only if a test asks.
A test that must stop storage mid-way starts its own `Azurite(tmp_path, in_memory=False)` (see
tests/fakes/azurite.py), so a restart finds its data again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.fakes.azurite import Azurite, require_azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    require_azurite()
    with Azurite(tmp_path_factory.mktemp("azurite-blob")) as server:
        yield server


@pytest.fixture(scope="session")
def azurite_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    require_azurite()
    with Azurite(tmp_path_factory.mktemp("azurite-queue"), service="queue") as server:
        yield server


@pytest.fixture
def blob_state_url(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    """A `--state` URL naming a container of its own on the session's Azurite (not created yet)."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    return azurite.state_url()
