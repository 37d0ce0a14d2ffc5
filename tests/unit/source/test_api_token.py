"""ApiToken: the secret never shows; claims are read without verification; token files are checked."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from opsentinel.errors import ConfigError
from opsentinel.source.token import ApiToken


def test_repr_str_and_format_hide_the_secret(secret: str) -> None:
    token = ApiToken(secret)
    shown = [repr(token), str(token), f"{token}", f"{token!r}", "%s" % token, repr([token])]  # noqa: UP031
    for text in shown:
        assert secret not in text
        for part in secret.split("."):
            assert part not in text
    assert repr(token) == (
        "ApiToken(aud=events.1password.com, features=[auditevents, itemusages, signinattempts])"
    )


def test_reveal_returns_the_secret_stripped(secret: str) -> None:
    assert ApiToken(f"  {secret}\n").reveal() == secret


def test_claims_are_read_without_a_verifying_key(make_token: Callable[..., str]) -> None:
    claims = ApiToken(make_token(features=["signinattempts"], account="ACCT")).claims
    assert claims.is_jwt
    assert claims.audience == "events.1password.com"
    assert claims.features == ("signinattempts",)
    assert claims.account == "ACCT"
    assert claims.issued_at is not None


def test_expired_token_still_decodes(make_token: Callable[..., str]) -> None:
    # The server judges expiry; we only read the claims (an expired token must not crash start-up).
    claims = ApiToken(make_token(exp=1)).claims
    assert claims.expires_at is not None
    assert claims.audience == "events.1password.com"


def test_string_audience_is_tolerated(make_token: Callable[..., str]) -> None:
    assert ApiToken(make_token(aud="events.1password.eu")).claims.audience == "events.1password.eu"


def test_token_that_is_not_a_jwt_is_usable() -> None:
    token = ApiToken("opaque-token-value")
    assert token.claims.is_jwt is False
    assert token.claims.audience is None
    assert token.claims.features == ()
    assert token.reveal() == "opaque-token-value"
    assert "opaque" not in repr(token)


@pytest.mark.parametrize("bad", ["", "   \n", "abc def", "abc\ndef", "tökén"])
def test_empty_or_unsendable_token_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        ApiToken(bad)
    message = str(info.value)
    assert "\n" not in message
    if bad.strip():
        assert bad.strip() not in message


def test_token_cannot_be_pickled(secret: str) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(ApiToken(secret))


def test_equal_tokens_compare_equal(secret: str) -> None:
    assert ApiToken(secret) == ApiToken(secret + "\n")
    assert ApiToken(secret) != ApiToken("other")


# -- from_file ------------------------------------------------------------------------------------


def _write(path: Path, content: str, mode: int) -> Path:
    path.write_text(content)
    os.chmod(path, mode)
    return path


def test_from_file_reads_and_strips(tmp_path: Path, secret: str, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path / "token", f"\n {secret} \n\n", 0o600)
    with caplog.at_level(logging.DEBUG):
        token = ApiToken.from_file(path)
    assert token.reveal() == secret
    assert caplog.records == []


def test_from_file_warns_when_others_can_read(
    tmp_path: Path, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "token", secret, 0o644)
    with caplog.at_level(logging.WARNING):
        ApiToken.from_file(path)
    assert len(caplog.records) == 1
    assert str(path) in caplog.text
    assert "chmod 600" in caplog.text
    assert secret not in caplog.text


def test_from_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(ConfigError, match="does not exist") as info:
        ApiToken.from_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", ["", "  \n\t\n"])
def test_from_file_empty(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path / "token", content, 0o600)
    with pytest.raises(ConfigError, match="is empty") as info:
        ApiToken.from_file(path)
    assert str(path) in str(info.value)


def test_from_file_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory") as info:
        ApiToken.from_file(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_from_file_below_a_file_is_unreadable(tmp_path: Path) -> None:
    plain = _write(tmp_path / "plain", "x", 0o600)
    with pytest.raises(ConfigError, match="cannot be read"):
        ApiToken.from_file(plain / "token")


def test_from_file_binary_content(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"\xff\xfe\x00binary")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="not a text file"):
        ApiToken.from_file(path)


def test_from_file_with_two_tokens_names_path_not_content(tmp_path: Path, secret: str) -> None:
    path = _write(tmp_path / "token", f"{secret}\n{secret}\n", 0o600)
    with pytest.raises(ConfigError) as info:
        ApiToken.from_file(path)
    message = str(info.value)
    assert str(path) in message
    assert secret not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "reference",
    [
        "@Microsoft.KeyVault(SecretUri=https://opsent-kv.vault.azure.net/secrets/op-sentinel-token/)",
        "  @microsoft.keyvault(VaultName=opsent-kv;SecretName=op-sentinel-token)\n",
    ],
)
def test_an_unresolved_key_vault_reference_is_not_a_token(reference: str) -> None:
    with pytest.raises(ConfigError, match=r"^the API token is still the Key Vault reference @") as refused:
        ApiToken(reference)
    # It names the vault and secret (not a secret itself), so the admin knows which one to fix.
    assert reference.strip() in str(refused.value) and "\n" not in str(refused.value)
