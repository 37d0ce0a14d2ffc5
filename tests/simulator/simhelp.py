"""Helpers shared by the simulator tests (constants, auth header, chain draining)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
OLD = "2000-01-01T00:00:00Z"  # a start_time before everything (clamped to the retention horizon)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def drain(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Follow a chain from `body` until has_more is false; all items and the last cursor."""
    items: list[dict[str, Any]] = []
    response = client.post(path, json=body)
    for _ in range(10_000):
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if not page["has_more"]:
            return items, page["cursor"]
        response = client.post(path, json={"cursor": page["cursor"]})
    raise AssertionError("chain never ended")
