"""Deterministic entropy: every generated value is a pure function of a key (seed, stream, index).

`Draw` hands out bounded integers from a 512-bit BLAKE2b digest of its key, rehashing when it runs
low, so one event costs one or two hashes instead of seeding a full PRNG. Nothing here is secret or
cryptographic; BLAKE2b is just a fast, well-mixed hash from the standard library.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from hashlib import blake2b
from itertools import accumulate
from typing import Generic, TypeVar

T = TypeVar("T")

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# 15 bits -> three base32 characters (a 1.7 MB table), so a 130-bit uuid takes 9 lookups: uuids are
# the most frequent value the generator makes, and this keeps a 1000-event page well under 20 ms.
_PAIRS = tuple(a + b for a in _B32 for b in _B32)
_TRIPLES = tuple(a + p for a in _B32 for p in _PAIRS)
_M15 = 32767
_MASK64 = (1 << 64) - 1


def base32_uuid(value: int, *, upper: bool = True) -> str:
    """26 base32 characters of the low 130 bits of `value`: the shape of every 1Password uuid."""
    t, v = _TRIPLES, value
    text = (
        t[v >> 115 & _M15] + t[v >> 100 & _M15] + t[v >> 85 & _M15] + t[v >> 70 & _M15]
        + t[v >> 55 & _M15] + t[v >> 40 & _M15] + t[v >> 25 & _M15] + t[v >> 10 & _M15] + _PAIRS[v & 1023]
    )  # fmt: skip
    return text if upper else text.lower()


def mix64(value: int) -> int:
    """SplitMix64 finaliser: a cheap, well-mixed 64-bit function of `value` (used for timestamp jitter)."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def key_int(*parts: object, size: int = 8) -> int:
    """An integer digest of `parts`, `size` bytes wide (stable across runs and platforms)."""
    data = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(blake2b(data, digest_size=size).digest(), "big")


class Weighted(Generic[T]):
    """A fixed weighted choice table, built once and drawn from many times."""

    __slots__ = ("_cum", "_total", "values")

    def __init__(self, pairs: Sequence[tuple[T, int]]) -> None:
        self.values: tuple[T, ...] = tuple(v for v, _ in pairs)
        self._cum = tuple(accumulate(w for _, w in pairs))
        self._total = self._cum[-1]

    def pick(self, draw: Draw) -> T:
        return self.values[bisect_right(self._cum, draw.below(self._total))]


class Draw:
    """Bounded integers drawn from BLAKE2b(key); the same key always yields the same sequence."""

    __slots__ = ("_key", "_round", "_x")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._round = 0
        self._x = self._fill()

    def _fill(self) -> int:
        self._round += 1
        h = blake2b(self._key, digest_size=64, salt=self._round.to_bytes(16, "big"))
        return int.from_bytes(h.digest(), "big")

    def below(self, n: int) -> int:
        """An integer in [0, n)."""
        if self._x < (n << 64):  # fewer than 64 spare bits left: refill so the bias stays negligible
            self._x = (self._x << 512) | self._fill()
        self._x, r = divmod(self._x, n)
        return r

    def chance(self, percent: float) -> bool:
        """True with probability `percent` / 100."""
        return self.below(10_000) < percent * 100

    def pick(self, seq: Sequence[T]) -> T:
        return seq[self.below(len(seq))]

    def uuid(self, *, upper: bool = True) -> str:
        return base32_uuid(self.below(1 << 130), upper=upper)
