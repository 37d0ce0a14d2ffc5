"""Generated data: every enum value, realistic shapes, V1 vs V2, determinism, scale."""

from __future__ import annotations

import re
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from tests.simulator.simhelp import OLD, T0, bearer, drain

from opsentinel.events import (
    AUDIT_ACTIONS,
    AUDIT_ACTIONS_V2_ONLY,
    AUDIT_OBJECT_TYPES,
    AUDIT_OBJECT_TYPES_V2_ONLY,
    EVENT_MODELS,
    ITEM_USAGE_ACTIONS,
    SIGNIN_CATEGORIES,
    SIGNIN_CATEGORY_TYPES,
    SIGNIN_TYPES,
    V2_ONLY_FIELDS,
    V2_ONLY_USER_FIELDS,
)
from opsentinel.simulator import SimulatorApp, SimulatorConfig, SimulatorServer
from opsentinel.simulator.rfc3339 import parse_ns, to_ns

UPPER = re.compile(r"[A-Z2-7]{26}")
LOWER = re.compile(r"[a-z2-7]{26}")
NANOS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z")
MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
SAMPLE = 12_000
CLIENT_FIELDS = {"app_name", "app_version", "platform_name", "platform_version", "os_name", "os_version"}
CLIENT_FIELDS |= {"ip_address"}


@pytest.fixture(scope="module")
def app() -> SimulatorApp:
    return SimulatorApp(SimulatorConfig(events=SAMPLE, days=30, now=T0, clock=lambda: to_ns(T0)))


def generated(app: SimulatorApp, stream: str, *, v1: bool = False) -> Iterator[dict[str, Any]]:
    log = app.logs[stream]
    for seq in range(SAMPLE):
        yield app.factory.build(stream, seq, log.history_ts(seq), v1=v1)


def test_every_sign_in_category_and_type_appears_with_its_pairing(app: SimulatorApp) -> None:
    pairs = Counter((e["category"], e["type"]) for e in generated(app, "signinattempts"))
    assert {c for c, _ in pairs} == set(SIGNIN_CATEGORIES)
    assert {t for _, t in pairs} == set(SIGNIN_TYPES)
    for category, kind in pairs:
        assert kind in SIGNIN_CATEGORY_TYPES[category]
    assert pairs[("success", "credentials_ok")] > SAMPLE // 4  # realistic: mostly successes


def test_every_item_usage_action_appears(app: SimulatorApp) -> None:
    assert {e["action"] for e in generated(app, "itemusages")} == set(ITEM_USAGE_ACTIONS)


def test_every_audit_action_and_object_type_appears(app: SimulatorApp) -> None:
    events = list(generated(app, "auditevents"))
    assert {e["action"] for e in events} == set(AUDIT_ACTIONS)
    assert {e["object_type"] for e in events} == set(AUDIT_OBJECT_TYPES)


def test_v1_maps_v2_only_values(app: SimulatorApp) -> None:
    audit = list(generated(app, "auditevents", v1=True))
    assert not {e["action"] for e in audit} & set(AUDIT_ACTIONS_V2_ONLY)
    assert not {e["object_type"] for e in audit} & set(AUDIT_OBJECT_TYPES_V2_ONLY)
    types = {e["type"] for e in generated(app, "signinattempts", v1=True)}
    assert "federated" not in types
    assert "u2f_timout" in types  # the V1 spelling of the 1.0.0/1.2.0 spec
    usages = list(generated(app, "itemusages", v1=True))
    assert "other" not in {e.get("action") for e in usages}
    assert any("action" not in e for e in usages)


@pytest.mark.parametrize("stream", ["auditevents", "signinattempts", "itemusages"])
@pytest.mark.parametrize("v1", [False, True])
def test_every_event_validates_against_the_shared_models(app: SimulatorApp, stream: str, v1: bool) -> None:
    model = EVENT_MODELS[stream]
    for event in generated(app, stream, v1=v1):
        model.model_validate(event)


def test_audit_event_shapes(app: SimulatorApp) -> None:
    events = list(generated(app, "auditevents"))
    for e in events:
        assert UPPER.fullmatch(e["uuid"])
        assert NANOS.fullmatch(e["timestamp"])
        assert UPPER.fullmatch(e["actor_uuid"])
        assert e["actor_details"]["uuid"] == e["actor_uuid"]
        assert UPPER.fullmatch(e["account_uuid"])
        assert UPPER.fullmatch(e["session"]["uuid"])
        assert LOWER.fullmatch(e["session"]["device_uuid"])
        assert parse_ns(e["session"]["login_time"]) <= parse_ns(e["timestamp"])
        if "object_details" in e:
            assert e["object_details"]["uuid"] == e["object_uuid"]
            assert set(e["object_details"]) == {"uuid", "name", "email"}
        if e["object_type"] in ("vault", "uva", "gva", "item", "device"):
            assert LOWER.fullmatch(e["object_uuid"])
    by_combo: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in events:
        by_combo.setdefault((e["action"], e["object_type"]), []).append(e)
    for e in by_combo[("join", "gm")]:
        assert e["aux_info"] in ("A", "R")
        assert e["aux_details"]["uuid"] == e["aux_uuid"]
        assert isinstance(e["aux_id"], int)
    assert {e["aux_info"] for e in by_combo[("join", "gm")]} == {"A", "R"}
    for e in by_combo[("grant", "uva")] + by_combo[("revoke", "uva")]:
        assert e["aux_details"]["uuid"] == e["aux_uuid"]
    for e in by_combo[("grant", "gva")]:
        assert "aux_uuid" in e
        assert "aux_details" not in e
    for e in by_combo[("create", "invite")]:
        assert "@" in e["aux_info"]
    for e in by_combo[("create", "vault")] + by_combo[("updatfw", "account")] + by_combo[("enblsso", "sso")]:
        assert not {"aux_id", "aux_uuid", "aux_details", "aux_info", "object_details"} & set(e)
    for e in by_combo[("suspend", "user")]:
        assert e["object_details"]["email"]
    located = sum("location" in e for e in events)
    assert 0.8 * len(events) < located < len(events)  # location sometimes absent


def test_sign_in_shapes(app: SimulatorApp) -> None:
    for e in generated(app, "signinattempts"):
        assert UPPER.fullmatch(e["uuid"])
        assert UPPER.fullmatch(e["session_uuid"])
        assert SECONDS.fullmatch(e["timestamp"])
        assert re.fullmatch(r"[A-Z]{2}", e["country"])
        assert "details" in e
        if e["type"] in ("ip_blocked", "country_blocked", "continent_blocked", "anonymous_blocked"):
            assert e["details"]["value"]
        if not e["category"].startswith("firewall"):
            assert e["details"] is None
        assert set(e["client"]) == CLIENT_FIELDS
    continents = {
        e["details"]["value"] for e in generated(app, "signinattempts") if e["type"] == "continent_blocked"
    }
    assert "Europe" in continents or "North America" in continents


def test_item_usage_shapes(app: SimulatorApp) -> None:
    for e in generated(app, "itemusages"):
        assert UPPER.fullmatch(e["uuid"])
        assert MILLIS.fullmatch(e["timestamp"])
        assert LOWER.fullmatch(e["vault_uuid"])
        assert LOWER.fullmatch(e["item_uuid"])
        assert e["used_version"] >= 1
        assert UPPER.fullmatch(e["user"]["uuid"])


def test_msp_fields_appear_on_a_minority(app: SimulatorApp) -> None:
    events = list(generated(app, "auditevents"))
    external = [e for e in events if e["actor_type"] == "external_user"]
    assert 0.01 * len(events) < len(external) < 0.25 * len(events)
    assert {e["actor_type"] for e in events} == {"user", "external_user"}
    for e in external:
        assert e["actor_details"]["user_type"] == "external_user"
        assert e["actor_details"]["user_account_uuid"] == e["actor_account_uuid"] != e["account_uuid"]
    for e in events:
        if e["actor_type"] == "user":
            assert "user_type" not in e["actor_details"]
            assert e["actor_account_uuid"] == e["account_uuid"]
    users = [e["user"] for e in generated(app, "itemusages")]
    assert 0 < sum("user_type" in u for u in users) < 0.25 * len(users)


def test_the_cast_is_small_and_recurs(app: SimulatorApp) -> None:
    events = list(generated(app, "itemusages"))
    users = Counter(e["user"]["uuid"] for e in events)
    assert len(users) < 100
    assert users.most_common(1)[0][1] > 50
    emails = {e["user"]["uuid"]: e["user"]["email"] for e in events}
    for e in events:
        assert emails[e["user"]["uuid"]] == e["user"]["email"]
    vaults = {e["item_uuid"]: e["vault_uuid"] for e in events}
    assert all(vaults[e["item_uuid"]] == e["vault_uuid"] for e in events)


def test_v1_and_v2_serve_the_same_events_with_different_fields(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    for stream, fields in V2_ONLY_FIELDS.items():
        v2, _ = drain(api, f"/api/v2/{stream}", {"start_time": OLD, "limit": 1000})
        v1, _ = drain(api, f"/api/v1/{stream}", {"start_time": OLD, "limit": 1000})
        assert [e["uuid"] for e in v1] == [e["uuid"] for e in v2]
        assert all(f in v2[0] for f in fields)
        for event in v1:
            assert not set(fields) & set(event)
            for key in ("actor_details", "target_user", "user"):
                if key in event:
                    assert not set(V2_ONLY_USER_FIELDS) & set(event[key])
        assert v1 == list(sim.events(stream, version=1))


def test_same_seed_same_data_other_seed_other_data(make_sim: Callable[..., SimulatorServer]) -> None:
    def first_page(sim: SimulatorServer) -> dict[str, Any]:
        body = {"start_time": OLD, "limit": 50}
        result: dict[str, Any] = httpx.post(
            f"{sim.base_url}/api/v2/auditevents", json=body, headers=bearer(sim.token)
        ).json()
        return result

    a, b, c = make_sim(seed=42), make_sim(seed=42), make_sim(seed=43)
    assert first_page(a) == first_page(b)
    assert a.account_uuid == b.account_uuid != c.account_uuid
    assert {e["uuid"] for e in first_page(a)["items"]}.isdisjoint(e["uuid"] for e in first_page(c)["items"])


def test_millions_of_events_are_served_without_materialising_them(
    make_sim: Callable[..., SimulatorServer],
) -> None:
    tracemalloc.start()
    try:
        sim = make_sim(events=2_000_000, days=30)
        middle = T0 - timedelta(days=15)
        body = {"start_time": middle.isoformat(), "limit": 1000}
        with httpx.Client(base_url=sim.base_url, headers=bearer(sim.token)) as client:
            page = client.post("/api/v2/itemusages", json=body).json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40_000_000  # 2M events as Python objects would take gigabytes
    log = sim.app.logs["itemusages"]
    first = log.first_at_or_after(to_ns(middle))
    assert 900_000 < first < 1_100_000
    assert [e["uuid"] for e in page["items"]] == [
        sim.app.event("itemusages", seq)["uuid"] for seq in range(first, first + 1000)
    ]
    assert page["has_more"] is True
    assert sim.event_count("itemusages") == 2_000_000
