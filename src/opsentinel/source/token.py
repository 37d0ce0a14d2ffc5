"""The Events API bearer token, held so that it cannot leak by accident.

`ApiToken` never shows the secret in `repr`/`str`/format; only `reveal()` returns it, and only the
client's `Authorization` header calls that. The token's claims are read WITHOUT verifying the
signature (the server verifies; the official clients do the same) and serve only to derive the base
URL and to describe the token. A token that is not a JWT stays usable with an explicit base URL.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from opsentinel.errors import ConfigError

__all__ = ["KEY_VAULT_REFERENCE", "ApiToken", "TokenClaims"]

logger = logging.getLogger(__name__)

_FEATURES_CLAIM = "1password.com/fts"
# An app setting Azure could not resolve keeps this literal text: never a token, never sent.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
_ACCOUNT_CLAIM = "1password.com/auuid"


@dataclass(frozen=True)
class TokenClaims:
    """What an unverified read of the token tells us; every field is None/empty when absent."""

    is_jwt: bool
    audiences: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    account: str | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def audience(self) -> str | None:
        """`aud[0]`: the Events API host the token was issued for, e.g. `events.1password.com`."""
        return self.audiences[0] if self.audiences else None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _unresolved_reference(text: str) -> str:
    # The reference names a vault and a secret, not the secret's value: showing it says which one.
    shown = (
        text if len(text) <= 200 and all("!" <= ch <= "~" for ch in text) else KEY_VAULT_REFERENCE + "...)"
    )
    return (
        f"the API token is still the Key Vault reference {shown}: Azure could not read the secret (it is "
        "not set yet, or the app's identity lacks 'Key Vault Secrets User' on the vault); nothing was sent"
    )


def _decode_claims(secret: str) -> TokenClaims:
    try:
        payload = jwt.decode(secret, options={"verify_signature": False}, algorithms=["ES256"])
    except jwt.PyJWTError:
        return TokenClaims(is_jwt=False)
    account = payload.get(_ACCOUNT_CLAIM)
    return TokenClaims(
        is_jwt=True,
        audiences=_strings(payload.get("aud")),
        features=_strings(payload.get(_FEATURES_CLAIM)),
        account=account if isinstance(account, str) else None,
        issued_at=_epoch(payload.get("iat")),
        expires_at=_epoch(payload.get("exp")),
    )


class ApiToken:
    """An Events API token. Compare, print and log it freely: the secret is never shown."""

    __slots__ = ("_claims", "_secret")

    def __init__(self, secret: str) -> None:
        """Wrap `secret` (surrounding whitespace is stripped).

        Raises ConfigError when it is empty or holds characters a header cannot carry (whitespace
        inside, control or non-ASCII characters): sending such a value would make the HTTP library
        raise an error that quotes it; or when it is an unresolved Azure Key Vault reference
        (`@Microsoft.KeyVault(...)`, what an app setting holds when the platform could not read the secret).
        """
        secret = secret.strip()
        if not secret:
            raise ConfigError("the API token is empty")
        if secret[: len(KEY_VAULT_REFERENCE)].lower() == KEY_VAULT_REFERENCE.lower():
            raise ConfigError(_unresolved_reference(secret))
        if not all("!" <= ch <= "~" for ch in secret):
            raise ConfigError(
                "the API token contains spaces, line breaks or non-ASCII characters; "
                "paste it again as one line"
            )
        self._secret = secret
        self._claims: TokenClaims | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ApiToken:
        """Read a token from a file holding only the token (surrounding whitespace is ignored).

        Logs a warning when the file is readable by group or others. Raises ConfigError, naming the
        path and never the content, when the file is missing, unreadable, not text or empty.
        """
        file = Path(path)
        try:
            mode = file.stat().st_mode
            raw = file.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(f"token file {file} does not exist") from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"token file {file} is a directory, not a file") from exc
        except PermissionError as exc:
            raise ConfigError(f"token file {file} cannot be read: permission denied") from exc
        except OSError as exc:
            raise ConfigError(f"token file {file} cannot be read: {exc.strerror or 'I/O error'}") from exc
        if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
            logger.warning(
                "token file %s is readable by other users (mode %o); restrict it with: chmod 600 %s",
                file,
                stat.S_IMODE(mode),
                file,
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"token file {file} is not a text file") from exc
        if not text.strip():
            raise ConfigError(f"token file {file} is empty")
        try:
            return cls(text)
        except ConfigError as exc:
            raise ConfigError(f"token file {file}: {exc}") from None

    def reveal(self) -> str:
        """The secret itself. Only for the `Authorization` header; never log or store the result."""
        return self._secret

    @property
    def claims(self) -> TokenClaims:
        """The token's claims, decoded without signature verification (cached)."""
        if self._claims is None:
            self._claims = _decode_claims(self._secret)
        return self._claims

    def __repr__(self) -> str:
        claims = self.claims
        if not claims.is_jwt:
            return "ApiToken(not a JWT)"
        return f"ApiToken(aud={claims.audience}, features=[{', '.join(claims.features)}])"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return format(repr(self), format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiToken):
            return NotImplemented
        return self._secret == other._secret

    def __hash__(self) -> int:
        return hash(self._secret)

    def __reduce__(self) -> Any:
        # Pickling would write the secret wherever the pickle goes.
        raise TypeError("ApiToken cannot be pickled")
