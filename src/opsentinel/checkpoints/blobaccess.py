"""Reaching a Blob state: the `--state` URL, credentials, the container client, names and errors.

A Blob state is one container. Its layout (names percent-encoded as in the file store):

    checkpoints/<account>/<stream>.json     one unit: the checkpoint JSON (empty until the first
                                            commit); leased by the unit's owner; metadata holds the
                                            owner, the ledger generation, the version, the commit time
                                            and the stream status
    ledger/<account>/<stream>/<gen>.jsonl   the unit's delivered-uuid ledger, an append blob, one
                                            line per append; the unit's metadata names the current one
    replicas/<replica id>                   a replica's heartbeat (empty; metadata and Last-Modified)

Errors from the Azure SDK are translated here, once, into one-line StoreErrors. Their text never
carries a connection string, an account key or a SAS: only the state URL (which has no query) and
the storage error code.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import requests
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobClient, ContainerClient, LinearRetry

from opsentinel.checkpoints.codec import encode_name, status_from_json, status_json
from opsentinel.config import is_blob_url  # re-exported beside the state URL parser
from opsentinel.errors import ConfigError, StoreError
from opsentinel.state import StreamStatus

if TYPE_CHECKING:
    from opsentinel.checkpoints.ownership import UnitLease

__all__ = ["BlobLocation", "BlobState", "error_code", "is_blob_url", "parse_state_url"]

CONNECTION_STRING_ENV: Final = "AZURE_STORAGE_CONNECTION_STRING"
CHECKPOINTS: Final = "checkpoints/"
LEDGERS: Final = "ledger/"
REPLICAS: Final = "replicas/"
# Unit metadata keys (lower case: Azure keeps the case, HTTP does not care).
META_OWNER: Final = "owner"
META_LEDGER: Final = "ledger"
META_VERSION: Final = "version"
META_UPDATED: Final = "updated"
META_STATUS: Final = "status"

_EMULATOR_ACCOUNT: Final = "devstoreaccount1"
# Azurite's published development key (the same in every installation; not a secret).
_EMULATOR_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_PUBLIC_SUFFIXES: Final = ("core.windows.net", "core.usgovcloudapi.net", "core.chinacloudapi.cn")
_ACCOUNT_RE: Final = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_LOOPBACK_NAMES: Final = frozenset({"localhost"})
_MAX_ERROR_TEXT: Final = 1024  # metadata holds 8 KiB in all; a status must leave room for the rest


@dataclass(frozen=True)
class BlobLocation:
    """A parsed `--state` URL: where the container lives. `str()` is the URL as the user gave it
    (never with credentials: a URL with a query is refused)."""

    account_url: str  # https://ACCOUNT.blob.core.windows.net, or http://127.0.0.1:PORT/ACCOUNT
    account: str
    container: str

    def __str__(self) -> str:
        return f"{self.account_url}/{self.container}"


def parse_state_url(text: str) -> BlobLocation:
    """`https://ACCOUNT.blob.core.windows.net/CONTAINER` or, on loopback only, the emulator form
    `http://127.0.0.1:PORT/ACCOUNT/CONTAINER`. ConfigError (one line) for anything else."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--state is not a Blob container URL: {exc}") from None
    # Shown without its query or user part: a pasted SAS or password must not reach the output.
    shown = f"{parts.scheme}://{parts.hostname or ''}{'' if port is None else f':{port}'}{parts.path}"
    bad = f"--state {shown} is not a Blob container URL"
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("https", "http") or not host:
        raise ConfigError(f"{bad}: expected https://ACCOUNT.blob.core.windows.net/CONTAINER")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(
            f"{bad}: it must not carry a query, a SAS or a password; put credentials in "
            f"{CONNECTION_STRING_ENV}, or leave it unset to use an Azure identity"
        )
    segments = [s for s in parts.path.split("/")]
    if segments and segments[0] == "":
        segments = segments[1:]
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash is harmless
    netloc = host if port is None else f"{_bracket(host)}:{port}"
    if _is_loopback(host):
        if len(segments) != 2:
            raise ConfigError(f"{bad}: an emulator URL is http://127.0.0.1:PORT/ACCOUNT/CONTAINER")
        account, container = segments
        account_url = f"{scheme}://{netloc}/{account}"
    else:
        if scheme != "https":
            raise ConfigError(f"{bad}: only a loopback emulator may use http://; use https://")
        account, _, suffix = host.partition(".blob.")
        if suffix not in _PUBLIC_SUFFIXES:
            raise ConfigError(f"{bad}: the host must be ACCOUNT.blob.core.windows.net")
        if len(segments) != 1:
            raise ConfigError(f"{bad}: expected https://{host}/CONTAINER (one container, no path)")
        (container,) = segments
        account_url = f"https://{netloc}"
    if not _ACCOUNT_RE.fullmatch(account):
        raise ConfigError(f"{bad}: the storage account name must be 3-24 lower-case letters and digits")
    if not _CONTAINER_RE.fullmatch(container):
        raise ConfigError(
            f"{bad}: a container name is 3-63 lower-case letters, digits and single hyphens, "
            "starting and ending with a letter or digit"
        )
    return BlobLocation(account_url, account, container)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credential(
    location: BlobLocation, env: Mapping[str, str]
) -> AzureNamedKeyCredential | AzureSasCredential | TokenCredential:
    """The connection string's key or SAS when it is set (for the URL's account), else an Azure
    identity. Messages name the variable, never its value."""
    text = env.get(CONNECTION_STRING_ENV, "").strip()
    if not text:
        if location.account_url.startswith("http://"):
            raise ConfigError(
                f"the emulator state {location} needs {CONNECTION_STRING_ENV} (an Azure identity "
                "is only sent over https)"
            )
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        fields.setdefault("accountname", _EMULATOR_ACCOUNT)
        fields.setdefault("accountkey", _EMULATOR_KEY)
    name = fields.get("accountname")
    if name is not None and name.lower() != location.account:
        raise ConfigError(
            f"{CONNECTION_STRING_ENV} is for the storage account {name!r}, but --state names "
            f"{location.account!r}"
        )
    if fields.get("accountkey") and name:
        return AzureNamedKeyCredential(name, fields["accountkey"])
    if fields.get("sharedaccesssignature"):
        return AzureSasCredential(fields["sharedaccesssignature"].lstrip("?"))
    raise ConfigError(
        f"{CONNECTION_STRING_ENV} has neither AccountName with AccountKey nor SharedAccessSignature"
    )


def error_code(exc: BaseException) -> str:
    """The storage error code of a refused request ("LeaseAlreadyPresent"), or ""."""
    code = getattr(exc, "error_code", None)
    if code is None and isinstance(exc, HttpResponseError):
        headers = getattr(exc.response, "headers", None) or {}
        code = headers.get("x-ms-error-code")
    return str(getattr(code, "value", code) or "")


def describe(exc: BaseException) -> str:
    """A short reason for an SDK failure, safe to show: status and code, or the network failure."""
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        return (
            f"no Azure credential could be used (set {CONNECTION_STRING_ENV}, or give this host a "
            "managed identity or an Azure CLI sign-in)"
        )
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        code = error_code(exc)
        hint = {
            "AuthenticationFailed": " (the account key or SAS is wrong)",
            "AuthorizationPermissionMismatch": " (the identity needs Storage Blob Data Contributor)",
            "AuthorizationFailure": " (access refused: check the key or SAS, the role, the network rules)",
        }.get(code, "")
        return f"HTTP {exc.status_code} {code or 'error'}{hint}".rstrip()
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        cause = _root_cause(exc)
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(cause, TimeoutError) or "timeout" in type(cause).__name__.lower():
            return "timed out"
        return "no answer" if isinstance(exc, ServiceResponseError) else "cannot connect"
    return type(exc).__name__


def _root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__ or getattr(exc, "inner_exception", None)
        if not isinstance(nxt, BaseException):
            break
        exc = nxt
    if exc.args and isinstance(exc.args[-1], BaseException):
        return exc.args[-1]  # urllib3 wraps the socket error in its args
    return exc


def status_metadata(status: StreamStatus) -> str:
    """A StreamStatus as a metadata value: the status file's JSON, ASCII only (a header value)."""
    data = status_json(status)
    if status.last_error is not None and len(status.last_error) > _MAX_ERROR_TEXT:
        data["last_error"] = status.last_error[: _MAX_ERROR_TEXT - 3] + "..."
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"))


def status_from_metadata(text: str, where: str) -> StreamStatus:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"{where} is corrupt (its status is not JSON); fix or remove it") from exc
    if not isinstance(data, dict):
        raise StoreError(f"{where} is corrupt (its status is not a JSON object); fix or remove it")
    return status_from_json(data, where)


class BlobState:
    """One Blob container holding a state: its client, its names, and the units this process owns.

    `owned` maps (account, stream) to the UnitLease this process holds (see leases); the store
    writes only units found there. Thread-safe: the pipeline reaches it from worker threads.
    """

    def __init__(self, location: BlobLocation, container: ContainerClient) -> None:
        self.location = location
        self.container = container
        self.owned: dict[tuple[str, str], UnitLease] = {}
        self.lock = threading.Lock()
        self._container_ready = False

    @classmethod
    def open(cls, url: str | BlobLocation, *, env: Mapping[str, str] | None = None) -> BlobState:
        """Parse `url` and build the client (no request yet). ConfigError for a bad URL or settings."""
        location = url if isinstance(url, BlobLocation) else parse_state_url(url)
        credential = _credential(location, os.environ if env is None else env)
        session = requests.Session()
        # One connection per worker thread and lease renewal, without urllib3's "pool is full" noise.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        container = ContainerClient(
            location.account_url,
            location.container,
            credential=credential,
            transport=RequestsTransport(session=session, session_owner=True),
            # Two retries a second apart, not the SDK's default of up to a minute: a page or a
            # renewal must not wait that long (the pipeline and the renewal loop retry on their own).
            retry_policy=LinearRetry(backoff=1, retry_total=2, random_jitter_range=1),
            connection_timeout=5,
            read_timeout=20,
        )
        return cls(location, container)

    def __repr__(self) -> str:
        return f"BlobState({str(self.location)!r})"

    def close(self) -> None:
        self.container.close()

    # names ---------------------------------------------------------------------------------

    @staticmethod
    def checkpoint_name(account: str, stream: str) -> str:
        return f"{CHECKPOINTS}{encode_name(account)}/{encode_name(stream)}.json"

    @staticmethod
    def ledger_prefix(account: str, stream: str) -> str:
        return f"{LEDGERS}{encode_name(account)}/{encode_name(stream)}/"

    def unit_blob(self, account: str, stream: str) -> BlobClient:
        return self.container.get_blob_client(self.checkpoint_name(account, stream))

    def ledger_blob(self, account: str, stream: str, generation: str) -> BlobClient:
        return self.container.get_blob_client(f"{self.ledger_prefix(account, stream)}{generation}.jsonl")

    # errors --------------------------------------------------------------------------------

    def fail(self, exc: BaseException, doing: str) -> StoreError:
        """The one-line StoreError for an SDK failure while `doing` something."""
        return StoreError(f"cannot {doing} in the Blob state {self.location}: {describe(exc)}")

    def ensure_container(self) -> None:
        """Create the container if it is missing (once per process)."""
        if self._container_ready:
            return
        try:
            self.container.create_container()
        except HttpResponseError as exc:
            if error_code(exc) != "ContainerAlreadyExists":
                raise self.fail(exc, "create the container") from exc
        except AzureError as exc:
            raise self.fail(exc, "create the container") from exc
        self._container_ready = True
