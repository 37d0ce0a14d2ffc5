"""Realistic 1Password events for the Sentinel tests: the simulator's generator plus hand-made edge cases."""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from opsentinel.simulator.data import EventFactory
from opsentinel.simulator.pool import build_pool

STREAMS = ("auditevents", "signinattempts", "itemusages")


@cache
def _factory(seed: int) -> EventFactory:
    return EventFactory(seed, build_pool(seed))


def events(stream: str, count: int, *, seed: int = 11, start: int = 0) -> list[dict[str, Any]]:
    """`count` V2 events of `stream` as the API returns them (distinct uuids for distinct seq)."""
    factory = _factory(seed)
    now = time.time_ns()
    return [factory.build(stream, seq, now - seq * 1_000_000_000) for seq in range(start, start + count)]


def audit_with_aux_id() -> dict[str, Any]:
    """An audit event carrying aux_id: Microsoft's transform guesses `itemusages` for it."""
    return {
        "uuid": "7GKKYPBD6MTRO3WF63INDBUH3Q",
        "timestamp": "2024-01-17T08:03:10.027Z",
        "actor_uuid": "AVHAFAP4PRDF5K3724I67N3CEU",
        "actor_details": {"uuid": "AVHAFAP4PRDF5K3724I67N3CEU", "name": "Automated User Provisioning"},
        "actor_type": "user",
        "action": "revoke",
        "object_type": "gva",
        "object_uuid": "ufa4oyzjxlvjkbwxn3d2vi37g4",
        "aux_id": 20446667,
        "aux_uuid": "6me6nx3rwsjzlcusk6hz2tyyj4",
        "session": {"uuid": "3JQCFUZ4HBB4BCNM5MKPMBVTPY", "ip": "20.8.61.140"},
        "location": {"country": "The Netherlands", "city": "Amsterdam", "latitude": 52.37, "longitude": 4.88},
    }


def signin_msp() -> dict[str, Any]:
    """A sign-in with MSP user fields and `details: null`."""
    return {
        "uuid": "CWDCZLRTOFCTRIK35WCSEC5VEU",
        "session_uuid": "4HNNWMTPZRAFJE2YAWRE2HZIR4",
        "timestamp": "2024-03-01T02:03:06.092123456+01:00",
        "category": "success",
        "type": "credentials_ok",
        "country": "ZA",
        "details": None,
        "target_user": {
            "uuid": "LB3XERXFAFCBZCENBG4HQSOATA",
            "name": "Hector Salamanca",
            "email": "hector@example.com",
            "user_type": "external_user",
            "user_account_uuid": "HOOX2SDXRRWWRDZ2LFOHPUUSTE",
        },
        "client": {"app_name": "1Password for Windows", "ip_address": "101.110.109.43"},
        "account_uuid": "GPIM3ILPK6JEBXOQ4S3YUT7R4N",
    }


def itemusage_without_action() -> dict[str, Any]:
    """An old item usage: no `action`, no `location`, user with user_type."""
    return {
        "uuid": "4SSKNKTUT5B7TDX6FYDEXHMG5U",
        "timestamp": "2024-01-15T11:59:03Z",
        "used_version": 7,
        "vault_uuid": "pxod76epyirrlm3hnsj4lws6yi",
        "item_uuid": "wwrhfe5qq3j7afzr6dxkgsnsem",
        "user": {"uuid": "2C4RSXPRI5BVFOS3TCJFYDZYXY", "name": "Tommy", "user_type": "user"},
        "client": {"app_name": "1Password for Windows", "ip_address": "80.114.2.247"},
    }


def health_event() -> dict[str, Any]:
    return {
        "uuid": "HEALTHHEALTHHEALTHHEALTH22",
        "timestamp": "2026-11-25T12:00:00Z",
        "category": "healthy",
        "type": "check",
        "details": {"message": "op-sentinel check"},
    }
