"""The Blob state's settings: the `--state` URL, credentials, and what its errors may show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from tests.fakes.azurite import ACCOUNT_KEY, Azurite

from opsentinel.checkpoints.blob import BlobCheckpointStore
from opsentinel.checkpoints.blobaccess import BlobLocation, BlobState, is_blob_url, parse_state_url
from opsentinel.checkpoints.leases import LeaseManager, Leases
from opsentinel.errors import ConfigError, StoreError
from opsentinel.state import Checkpoint


@pytest.mark.parametrize(
    ("url", "account_url", "container"),
    [
        (
            "https://opsstate.blob.core.windows.net/checkpoints",
            "https://opsstate.blob.core.windows.net",
            "checkpoints",
        ),
        (
            "https://opsstate.blob.core.windows.net/checkpoints/",
            "https://opsstate.blob.core.windows.net",
            "checkpoints",
        ),
        ("HTTPS://OPSSTATE.blob.core.windows.net/cp-1", "https://opsstate.blob.core.windows.net", "cp-1"),
        ("https://gov1.blob.core.usgovcloudapi.net/abc", "https://gov1.blob.core.usgovcloudapi.net", "abc"),
        ("http://127.0.0.1:10000/devstoreaccount1/state", "http://127.0.0.1:10000/devstoreaccount1", "state"),
        ("http://localhost:10000/devstoreaccount1/state", "http://localhost:10000/devstoreaccount1", "state"),
        ("http://[::1]:10000/devstoreaccount1/state", "http://[::1]:10000/devstoreaccount1", "state"),
    ],
)
def test_the_two_url_forms(url: str, account_url: str, container: str) -> None:
    assert is_blob_url(url)
    location = parse_state_url(url)
    assert (location.account_url, location.container) == (account_url, container)
    assert str(location) == f"{account_url}/{container}"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://opsstate.blob.core.windows.net/c12", "only a loopback emulator may use http://"),
        ("https://opsstate.blob.core.windows.net.evil.example/c12", "ACCOUNT.blob.core.windows.net"),
        ("https://example.com/c12", "ACCOUNT.blob.core.windows.net"),
        ("https://opsstate.blob.core.windows.net", "one container"),
        ("https://opsstate.blob.core.windows.net/c12/sub", "one container"),
        ("https://opsstate.blob.core.windows.net/Bad_Name", "container name"),
        ("https://opsstate.blob.core.windows.net/a--b", "container name"),
        ("https://Ops_State.blob.core.windows.net/c12", "storage account name"),
        ("http://127.0.0.1:10000/c12", "ACCOUNT/CONTAINER"),
        ("ftp://opsstate.blob.core.windows.net/c12", "expected https://"),
        ("https://opsstate.blob.core.windows.net:99999/c12", "not a Blob container URL"),
    ],
)
def test_a_bad_url_is_one_clear_line(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_state_url(url)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_a_sas_or_password_in_the_url_is_refused_and_never_shown() -> None:
    for url in (
        "https://opsstate.blob.core.windows.net/c12?sv=2024&sig=SECRETSIG",
        "https://user:SECRETPW@opsstate.blob.core.windows.net/c12",
    ):
        with pytest.raises(ConfigError) as info:
            parse_state_url(url)
        assert "AZURE_STORAGE_CONNECTION_STRING" in str(info.value)
        assert "SECRET" not in str(info.value)


def test_a_directory_is_not_a_blob_url() -> None:
    assert not is_blob_url(".op-sentinel/")
    assert not is_blob_url("/var/lib/op-sentinel")


def test_credential_settings_are_checked_without_showing_them() -> None:
    emulator = "http://127.0.0.1:10000/devstoreaccount1/state"
    with pytest.raises(ConfigError, match="needs AZURE_STORAGE_CONNECTION_STRING"):
        BlobState.open(emulator, env={})
    other = f"DefaultEndpointsProtocol=http;AccountName=someoneelse;AccountKey={ACCOUNT_KEY};"
    with pytest.raises(ConfigError) as info:
        BlobState.open(emulator, env={"AZURE_STORAGE_CONNECTION_STRING": other})
    assert "someoneelse" in str(info.value)
    assert ACCOUNT_KEY not in str(info.value)
    with pytest.raises(ConfigError, match="neither AccountName with AccountKey nor SharedAccessSignature"):
        BlobState.open(emulator, env={"AZURE_STORAGE_CONNECTION_STRING": "AccountName=devstoreaccount1"})
    with pytest.raises(ConfigError, match="a lease lasts 15-60 seconds"):
        Leases(
            BlobState.open(emulator, env={"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}),
            "r",
            duration=10,
        )


def test_use_development_storage_reaches_azurite(azurite: Azurite) -> None:
    store = BlobCheckpointStore.open(
        azurite.state_url(), env={"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}
    )
    store.ensure_writable()  # creates the container and writes a probe
    assert store.list() == []
    store.close()


def test_a_wrong_key_is_one_line_without_the_key(azurite: Azurite) -> None:
    wrong = ACCOUNT_KEY[:-6] + "AAAAA="
    env = {"AZURE_STORAGE_CONNECTION_STRING": f"AccountName=devstoreaccount1;AccountKey={wrong}"}
    store = BlobCheckpointStore.open(azurite.state_url(), env=env)
    with pytest.raises(StoreError) as info:
        store.ensure_writable()
    text = str(info.value)
    assert "HTTP 403 " in text  # Azurite says AuthorizationFailure, Azure AuthenticationFailed
    assert "key or SAS" in text
    assert wrong not in text
    assert "\n" not in text


def test_an_unreachable_state_is_one_line(tmp_path: object) -> None:
    location = BlobLocation("http://127.0.0.1:9/devstoreaccount1", "devstoreaccount1", "state")
    env = {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}
    store = BlobCheckpointStore.open(location, env=env)
    with pytest.raises(StoreError) as info:
        store.read("acct", "auditevents")
    assert str(info.value) == (
        "cannot read the checkpoint of auditevents (account acct) in the Blob state "
        "http://127.0.0.1:9/devstoreaccount1/state: connection refused"
    )
    with pytest.raises(ConfigError, match="renew a 30 s lease more often"):
        LeaseManager(store.state, "r", renew_every=20)


def test_a_container_sas_in_the_connection_string_is_enough(azurite: Azurite) -> None:
    """A SAS for one existing container (no right to create containers) runs a unit."""
    url = azurite.state_url()
    container = url.rsplit("/", 1)[1]
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    sas = generate_container_sas(
        "devstoreaccount1",
        container,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(
            read=True, add=True, create=True, write=True, delete=True, list=True
        ),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    env = {"AZURE_STORAGE_CONNECTION_STRING": f"BlobEndpoint={azurite.endpoint};SharedAccessSignature={sas}"}
    store = BlobCheckpointStore.open(url, env=env)
    store.ensure_writable()
    Leases(store.state, "r").claim("acct", "auditevents")
    assert store.commit(Checkpoint("acct", "auditevents", cursor="c")).version == 1
    store.close()
