"""Opaque, HMAC-signed cursors that carry a chain's whole state, so the server keeps none.

Layout (big-endian), then base64url without padding (60 characters):

    version u8 | stream u8 | position u64 | limit u16 | start_ns i64 | end_ns i64 (-1: open) |
    account tag 4 bytes | HMAC-SHA256(key, all of the above) truncated to 16 bytes

Any change to a cursor fails the HMAC (400). A new key epoch rejects every cursor issued before, like
a server-side key rotation. The account tag stops one account's cursor from being used
with another account's token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from opsentinel.streams import STREAM_NAMES

VERSION = 1
_BODY = struct.Struct(">BBQHqq4s")
_MAC_SIZE = 16
_SIZE = _BODY.size + _MAC_SIZE
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class InvalidCursor(ValueError):
    """The cursor is not one this simulator issued with its current key (or is garbled)."""


@dataclass(frozen=True)
class CursorState:
    """Where a chain stands: next event seq, page size and the fixed time window."""

    stream: str
    position: int
    limit: int
    start_ns: int
    end_ns: int | None
    account_tag: bytes


def account_tag(account_uuid: str) -> bytes:
    return hashlib.blake2b(account_uuid.encode(), digest_size=4).digest()


class CursorCodec:
    """Encodes and verifies cursors. Thread-safe.

    `epoch` is read on every call; when it changes, the HMAC key changes with it, so every cursor
    signed under an earlier epoch is rejected (the fault plan's `invalidate_cursors`).
    """

    def __init__(self, secret: bytes, epoch: Callable[[], int] = lambda: 0) -> None:
        self._secret = secret
        self._epoch = epoch
        self._keys: dict[int, bytes] = {}
        self._lock = threading.Lock()

    @property
    def _key(self) -> bytes:
        epoch = self._epoch()
        with self._lock:
            key = self._keys.get(epoch)
            if key is None:
                key = self._keys[epoch] = hashlib.sha256(self._secret + epoch.to_bytes(8, "big")).digest()
            return key

    def encode(self, state: CursorState) -> str:
        body = _BODY.pack(
            VERSION,
            STREAM_NAMES.index(state.stream),
            state.position,
            state.limit,
            state.start_ns,
            -1 if state.end_ns is None else state.end_ns,
            state.account_tag,
        )
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_SIZE]
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()

    def decode(self, text: str) -> CursorState:
        """The state inside `text`; InvalidCursor if it is malformed, forged or from an old key."""
        if len(text) > 200 or not _ALPHABET.fullmatch(text):
            raise InvalidCursor("cursor is not base64url")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor("cursor is not base64url") from exc
        if len(raw) != _SIZE:
            raise InvalidCursor("cursor has the wrong length")
        body, mac = raw[: _BODY.size], raw[_BODY.size :]
        expected = hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_SIZE]
        if not hmac.compare_digest(mac, expected):
            raise InvalidCursor("cursor signature does not match")
        version, stream, position, limit, start_ns, end_ns, tag = _BODY.unpack(body)
        if version != VERSION or stream >= len(STREAM_NAMES):
            raise InvalidCursor("unknown cursor version")
        return CursorState(
            stream=STREAM_NAMES[stream],
            position=position,
            limit=limit,
            start_ns=start_ns,
            end_ns=None if end_ns == -1 else end_ns,
            account_tag=tag,
        )
