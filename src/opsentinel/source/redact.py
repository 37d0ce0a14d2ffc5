"""Make text from the outside world safe to put in a message or a log line.

Server error messages, response excerpts and library exception texts pass through `scrub` before
they reach an exception or a log: the token itself, anything shaped like a JWT and any
`Bearer <credential>` are replaced, control characters are flattened and the result is cut short.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "scrub"]

REDACTED = "[redacted]"

# Three base64url segments, the first starting like a JSON object header (`{"` -> `eyJ`).
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+")
_WHITESPACE = re.compile(r"\s+")


def scrub(text: str, *, secrets: tuple[str, ...] = (), limit: int = 200) -> str:
    """Return `text` on one line, at most `limit` characters, with credentials removed.

    `secrets` are removed verbatim (whole token, and each of its JWT segments longer than 16
    characters, so a server echoing only the signature leaks nothing either).
    """
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, REDACTED)
        for part in secret.split("."):
            if len(part) > 16:
                text = text.replace(part, REDACTED)
    text = _JWT_LIKE.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)].rstrip() + "…"
    return text
