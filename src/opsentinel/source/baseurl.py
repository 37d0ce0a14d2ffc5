"""Base URL rules (interface.md, "Base URL rules"): where the token may be sent.

- `https://` only; `http://` only for a loopback host (127.0.0.1, ::1, localhost), for the simulator.
- Scheme and host only: no trailing `/`, path, query, fragment or user info. Each is a clear error,
  never a silent fix (the Sentinel connector asks for the same form).
- The four official hosts are accepted; loopback hosts are accepted; any other host is refused unless
  the caller allows custom hosts, so a mistyped domain never receives the token.

Source of the host list: ../shared/reference/onepassword-events-api.md section 1.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from opsentinel.errors import ConfigError
from opsentinel.source.token import ApiToken

__all__ = [
    "LOOPBACK_HOSTS",
    "OFFICIAL_HOSTS",
    "base_url_from_token",
    "is_loopback_host",
    "region_of",
    "validate_base_url",
]

# Host -> region name as third-party clients use it (PostHog: us / ca / eu / enterprise).
OFFICIAL_HOSTS: Final[dict[str, str]] = {
    "events.1password.com": "us",
    "events.ent.1password.com": "enterprise",
    "events.1password.ca": "ca",
    "events.1password.eu": "eu",
}
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
OLD_AUDIENCE: Final = "com.1password.streamingservice"

_EXAMPLE = "https://events.1password.com"
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?", re.ASCII)


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.1, ::1 (with or without brackets) and localhost."""
    return host.lower().strip("[]") in LOOPBACK_HOSTS


def region_of(base_url: str) -> str | None:
    """`us`, `enterprise`, `ca` or `eu` for an official base URL; None for any other host."""
    host = urlsplit(base_url).hostname or ""
    return OFFICIAL_HOSTS.get(host)


def validate_base_url(url: str, *, allow_custom_host: bool = False) -> str:
    """Check `url` against the base URL rules and return it as `scheme://host[:port]`, lower case.

    Raises ConfigError with one line saying what is wrong and what to use instead. The messages
    never repeat user info or a query string, which may hold credentials.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"base URL is empty: use {_EXAMPLE}")
    if url != url.strip() or any(ch.isspace() for ch in url):
        raise ConfigError("base URL must not contain spaces or line breaks")
    if "://" not in url:
        raise ConfigError(f"base URL must start with https:// (e.g. {_EXAMPLE})")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"base URL is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ConfigError(f"base URL must start with https:// (e.g. {_EXAMPLE}), not {scheme}://")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ConfigError("base URL must not contain a user name or password")
    host = (parts.hostname or "").lower()
    if not host:
        raise ConfigError(f"base URL has no host: use {_EXAMPLE}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    clean = f"{scheme}://{netloc}"
    if parts.query or url.endswith("?"):
        raise ConfigError(f"base URL must not have a query string: use {clean}")
    if parts.fragment or url.endswith("#"):
        raise ConfigError(f"base URL must not have a fragment ('#...'): use {clean}")
    if parts.path == "/":
        raise ConfigError(f"base URL must not end with '/': use {clean}")
    if parts.path:
        raise ConfigError(f"base URL must not have a path ({parts.path[:60]!r}): use {clean}")
    if ":" not in host and not _HOST_NAME.fullmatch(host):
        raise ConfigError(f"base URL host {host[:60]!r} is not a valid host name")
    loopback = is_loopback_host(host)
    if scheme == "http" and not loopback:
        raise ConfigError(
            f"base URL must use https:// (http:// is allowed only for 127.0.0.1, ::1 and localhost): "
            f"use https://{netloc}"
        )
    if not loopback and host not in OFFICIAL_HOSTS and not allow_custom_host:
        raise ConfigError(
            f"base URL host {host!r} is not an official 1Password Events API host "
            f"({', '.join(OFFICIAL_HOSTS)}); if it is right, pass --allow-custom-host"
        )
    return clean


def base_url_from_token(token: ApiToken, *, allow_custom_host: bool = False) -> str:
    """`https://` + the token's `aud[0]`, checked by `validate_base_url`.

    Raises ConfigError when the token is not a JWT, has no audience, or is an old Events API token
    (audience `com.1password.streamingservice`), which carries no host.
    """
    claims = token.claims
    if not claims.is_jwt:
        raise ConfigError("the token is not a JWT, so the base URL cannot be derived from it: set --base-url")
    audience = claims.audience
    if not audience:
        raise ConfigError("the token has no audience (aud) claim to derive the base URL from: set --base-url")
    if audience == OLD_AUDIENCE:
        raise ConfigError("this token is from the old Events API; issue a new one")
    try:
        return validate_base_url(f"https://{audience}", allow_custom_host=allow_custom_host)
    except ConfigError as exc:
        raise ConfigError(
            f"the token's audience {audience[:80]!r} is not usable as a base URL: {exc}"
        ) from None
