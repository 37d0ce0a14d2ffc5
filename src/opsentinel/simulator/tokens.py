"""ES256 JWT bearer tokens shaped like 1Password Events API tokens; issued and verified here.

Header `{"alg": "ES256", "kid": ..., "typ": "JWT"}`; claims `aud` (list with the events host),
`1password.com/fts` (features), `1password.com/auuid` (account uuid), `iss: com.1password.b5`, `sub`
(integration uuid), `iat`, `jti`, optional `exp` (reference section 2).

The signing key is derived from the seed, so a token written by one `simulate` run stays valid when the
simulator restarts with the same seed. These are local test tokens for fake data; nothing here guards
anything real.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from opsentinel.events import FEATURES
from opsentinel.simulator.rfc3339 import NS

ISSUER = "com.1password.b5"
FEATURES_CLAIM = "1password.com/fts"
ACCOUNT_CLAIM = "1password.com/auuid"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class InvalidToken(ValueError):
    """The bearer token is missing, malformed, not ours, expired or for another audience."""


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token grants."""

    subject: str
    features: tuple[str, ...]
    account_uuid: str | None
    issued_at: int  # seconds since the epoch


class TokenAuthority:
    """Issues and verifies the simulator's tokens. Thread-safe (immutable after construction)."""

    def __init__(
        self,
        *,
        seed: int,
        audience: str,
        account_uuid: str,
        subject: str,
        clock: Callable[[], int],
    ) -> None:
        secret = int.from_bytes(hashlib.sha256(f"{seed}:token-key".encode()).digest(), "big")
        self._key = ec.derive_private_key(1 + secret % (_P256_ORDER - 1), ec.SECP256R1())
        self._public = self._key.public_key()
        self.kid = hashlib.sha256(f"{seed}:kid".encode()).hexdigest()[:26]
        self.audience = audience
        self.account_uuid = account_uuid
        self.subject = subject
        self._clock = clock

    def issue(
        self,
        *,
        features: Iterable[str] | None = None,
        audience: str | Iterable[str] | None = None,
        account: str | None = None,
        subject: str | None = None,
        expires_in: float | None = None,
        issued_at: int | None = None,
    ) -> str:
        """A signed token. Defaults: all three features, this simulator's audience, account and subject.

        `audience` may be a string or a list (the claim is always a list); `expires_in` seconds adds
        `exp`; `issued_at` (epoch seconds) overrides `iat`, e.g. to pin introspect output.
        """
        iat = issued_at if issued_at is not None else self._clock() // NS
        aud = [audience] if isinstance(audience, str) else list(audience or [self.audience])
        claims: dict[str, Any] = {
            "aud": aud,
            FEATURES_CLAIM: list(FEATURES if features is None else features),
            ACCOUNT_CLAIM: account or self.account_uuid,
            "iss": ISSUER,
            "sub": subject or self.subject,
            "iat": iat,
            "jti": uuid.uuid4().hex,
        }
        if expires_in is not None:
            claims["exp"] = int(iat + expires_in)
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"})

    def verify(self, token: str) -> TokenClaims:
        """The claims of a token this authority signed for its audience; InvalidToken otherwise."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self.kid:
                raise InvalidToken("token was not issued by this server")
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["ES256"],
                audience=self.audience,
                options={"require": ["aud", "iat", "sub"], "verify_iat": False, "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {type(exc).__name__}") from exc
        # `exp` is checked against the simulator's clock (which tests may fake), not the wall clock.
        exp = claims.get("exp")
        if exp is not None and (not isinstance(exp, int | float) or exp * NS <= self._clock()):
            raise InvalidToken("token has expired")
        features = claims.get(FEATURES_CLAIM, [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise InvalidToken("token features claim is malformed")
        iat = claims["iat"]
        account = claims.get(ACCOUNT_CLAIM)
        return TokenClaims(
            subject=str(claims["sub"]),
            features=tuple(features),
            account_uuid=account if isinstance(account, str) else None,
            issued_at=int(iat) if isinstance(iat, int | float) else 0,
        )
