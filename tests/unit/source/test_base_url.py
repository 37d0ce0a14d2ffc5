"""Base URL rules (interface.md): https, no trailing '/', official hosts, loopback http, custom opt-in."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from opsentinel.errors import ConfigError
from opsentinel.source.baseurl import base_url_from_token, region_of, validate_base_url
from opsentinel.source.token import ApiToken

OFFICIAL = [
    "https://events.1password.com",
    "https://events.ent.1password.com",
    "https://events.1password.ca",
    "https://events.1password.eu",
]


@pytest.mark.parametrize("url", OFFICIAL)
def test_official_hosts_are_accepted_as_they_are(url: str) -> None:
    assert validate_base_url(url) == url


def test_regions() -> None:
    assert [region_of(u) for u in OFFICIAL] == ["us", "enterprise", "ca", "eu"]
    assert region_of("http://127.0.0.1:8080") is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://localhost:5000",
        "http://[::1]:9000",
        "https://127.0.0.1:8443",
        "http://localhost",
    ],
)
def test_loopback_may_use_http(url: str) -> None:
    assert validate_base_url(url) == url


def test_host_and_scheme_are_normalised_to_lower_case() -> None:
    assert validate_base_url("HTTPS://Events.1Password.COM") == "https://events.1password.com"


def test_trailing_slash_is_an_error_naming_the_fix() -> None:
    with pytest.raises(ConfigError) as info:
        validate_base_url("https://events.1password.com/")
    assert str(info.value) == "base URL must not end with '/': use https://events.1password.com"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://events.1password.com/api/v2", "must not have a path"),
        ("https://events.1password.com?x=1", "must not have a query"),
        ("https://events.1password.com#top", "must not have a fragment"),
        ("events.1password.com", "must start with https://"),
        ("ftp://events.1password.com", "must start with https://"),
        ("https://", "has no host"),
        ("https://events.1password.com:99999", "not a valid URL"),
        (" https://events.1password.com", "spaces"),
        ("https://events.1password.com\n", "spaces"),
        ("", "empty"),
    ],
)
def test_malformed_urls_give_one_clear_line(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        validate_base_url(url)
    assert "\n" not in str(info.value)


def test_user_info_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="user name or password") as info:
        validate_base_url("https://me:hunter2@events.1password.com")
    assert "hunter2" not in str(info.value)


def test_query_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        validate_base_url("https://events.1password.com?token=hunter2")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ["http://events.1password.com", "http://example.internal"])
def test_http_to_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="must use https://"):
        validate_base_url(url, allow_custom_host=True)


@pytest.mark.parametrize(
    "url", ["https://events.1passwrd.com", "https://events.1password.com.evil.example", "https://10.0.0.5"]
)
def test_custom_host_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ConfigError, match="--allow-custom-host"):
        validate_base_url(url)
    assert validate_base_url(url, allow_custom_host=True) == url


def test_custom_host_with_port_allowed() -> None:
    assert validate_base_url("https://proxy.corp:8443", allow_custom_host=True) == "https://proxy.corp:8443"


# -- from the token --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", [u.removeprefix("https://") for u in OFFICIAL])
def test_base_url_from_token_audience(make_token: Callable[..., str], host: str) -> None:
    assert base_url_from_token(ApiToken(make_token(aud=[host]))) == f"https://{host}"


def test_old_events_api_token_is_refused(make_token: Callable[..., str]) -> None:
    token = ApiToken(make_token(aud=["com.1password.streamingservice"]))
    with pytest.raises(ConfigError) as info:
        base_url_from_token(token)
    assert str(info.value) == "this token is from the old Events API; issue a new one"


def test_token_without_audience(make_token: Callable[..., str]) -> None:
    with pytest.raises(ConfigError, match="no audience"):
        base_url_from_token(ApiToken(make_token(aud=None)))


def test_opaque_token_needs_an_explicit_base_url() -> None:
    with pytest.raises(ConfigError, match="--base-url"):
        base_url_from_token(ApiToken("not-a-jwt"))


def test_derived_url_goes_through_the_same_rules(make_token: Callable[..., str]) -> None:
    token = ApiToken(make_token(aud=["events.example.com"]))
    with pytest.raises(ConfigError, match="--allow-custom-host"):
        base_url_from_token(token)
    assert base_url_from_token(token, allow_custom_host=True) == "https://events.example.com"
    with pytest.raises(ConfigError, match="must not end with '/'"):
        base_url_from_token(ApiToken(make_token(aud=["events.1password.com/"])))
