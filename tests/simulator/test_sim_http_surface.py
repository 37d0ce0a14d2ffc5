"""Routing, authentication, introspection and error bodies, over real HTTP."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.simulator.simhelp import T0, bearer

from opsentinel.simulator import ManualClock, SimulatorServer
from opsentinel.simulator.rfc3339 import parse_ns, to_ns

V2_PATHS = ["/api/v2/auditevents", "/api/v2/signinattempts", "/api/v2/itemusages"]
V1_PATHS = ["/api/v1/auditevents", "/api/v1/signinattempts", "/api/v1/itemusages"]


def assert_v2_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == {"status", "message"}
    assert body["status"] == status
    assert isinstance(body["message"], str)
    assert body["message"]


def assert_v1_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"Error"}
    assert set(body["Error"]) == {"Message"}
    assert body["Error"]["Message"]


def test_v2_introspect_describes_the_token(sim: SimulatorServer, api: httpx.Client) -> None:
    response = api.get("/api/v2/auth/introspect")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == {"uuid", "issued_at", "features", "account_uuid"}
    assert body["features"] == ["auditevents", "itemusages", "signinattempts"]
    assert body["account_uuid"] == sim.account_uuid
    assert len(body["uuid"]) == 26
    assert parse_ns(body["issued_at"]) == to_ns(T0)


def test_v1_introspect_uses_pascal_case(sim: SimulatorServer) -> None:
    token = sim.issue_token(features=["itemusages", "signinattempts"])
    response = httpx.get(f"{sim.base_url}/api/auth/introspect", headers=bearer(token))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"UUID", "IssuedAt", "Features"}
    assert body["Features"] == ["itemusages", "signinattempts"]


def test_token_claims_have_the_events_api_shape(sim: SimulatorServer) -> None:
    header = jwt.get_unverified_header(sim.token)
    claims = jwt.decode(sim.token, options={"verify_signature": False})
    assert header["alg"] == "ES256"
    assert header["kid"]
    assert claims["aud"] == ["events.1password.com"]
    assert claims["1password.com/fts"] == ["auditevents", "itemusages", "signinattempts"]
    assert claims["1password.com/auuid"] == sim.account_uuid
    assert claims["iss"] == "com.1password.b5"
    assert {"sub", "iat", "jti"} <= set(claims)


def _unsigned(sim: SimulatorServer) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = jwt.decode(sim.token, options={"verify_signature": False})
    return f"{part({'alg': 'none', 'kid': sim.app.tokens.kid})}.{part(claims)}."


def _foreign_key(sim: SimulatorServer) -> str:
    claims = jwt.decode(sim.token, options={"verify_signature": False})
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": sim.app.tokens.kid})


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda sim: {}, id="missing"),
        pytest.param(lambda sim: {"Authorization": f"Basic {sim.token}"}, id="not-bearer"),
        pytest.param(lambda sim: bearer("not-a-jwt"), id="garbage"),
        pytest.param(lambda sim: bearer(sim.token[:-6] + "AAAAAA"), id="bad-signature"),
        pytest.param(lambda sim: bearer(_unsigned(sim)), id="unsigned"),
        pytest.param(lambda sim: bearer(_foreign_key(sim)), id="foreign-key"),
        pytest.param(
            lambda sim: bearer(sim.issue_token(audience="events.1password.eu")), id="other-audience"
        ),
        pytest.param(lambda sim: bearer(sim.issue_token(expires_in=-1)), id="expired"),
    ],
)
def test_bad_tokens_get_401(
    sim: SimulatorServer, make_headers: Callable[[SimulatorServer], dict[str, str]]
) -> None:
    headers = make_headers(sim)
    with httpx.Client(base_url=sim.base_url, headers=headers) as client:
        assert_v2_error(client.post("/api/v2/auditevents", json={}), 401)
        assert_v1_error(client.post("/api/v1/itemusages", json={}), 401)
        assert_v2_error(client.get("/api/v2/auth/introspect"), 401)
        assert_v1_error(client.get("/api/auth/introspect"), 401)


def test_token_from_another_simulator_is_rejected(make_sim: Callable[..., SimulatorServer]) -> None:
    ours, theirs = make_sim(seed=1), make_sim(seed=2)
    response = httpx.post(f"{ours.base_url}/api/v2/auditevents", json={}, headers=bearer(theirs.token))
    assert_v2_error(response, 401)


def test_token_without_the_feature_gets_401_on_that_stream_only(sim: SimulatorServer) -> None:
    token = sim.issue_token(features=["itemusages"])
    with httpx.Client(base_url=sim.base_url, headers=bearer(token)) as client:
        assert_v2_error(client.post("/api/v2/auditevents", json={}), 401)
        assert_v1_error(client.post("/api/v1/signinattempts", json={}), 401)
        assert client.post("/api/v2/itemusages", json={}).status_code == 200
        assert client.post("/api/v1/itemusages", json={}).status_code == 200
        assert client.get("/api/v2/auth/introspect").json()["features"] == ["itemusages"]


def test_a_later_expiry_is_honoured_on_the_simulator_clock(sim: SimulatorServer, clock: ManualClock) -> None:
    token = sim.issue_token(expires_in=60)
    url = f"{sim.base_url}/api/v2/auth/introspect"
    assert httpx.get(url, headers=bearer(token)).status_code == 200
    clock.advance(61)
    assert httpx.get(url, headers=bearer(token)).status_code == 401


def test_audience_is_configurable(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(audience="127.0.0.1")
    assert jwt.decode(sim.token, options={"verify_signature": False})["aud"] == ["127.0.0.1"]
    assert httpx.get(f"{sim.base_url}/api/v2/auth/introspect", headers=bearer(sim.token)).status_code == 200
    other = sim.issue_token(audience="events.1password.com")
    assert httpx.get(f"{sim.base_url}/api/v2/auth/introspect", headers=bearer(other)).status_code == 401


@pytest.mark.parametrize("path", ["/", "/api/v2/nothing", "/api/v3/auditevents", "/api/v2/auditevents/"])
def test_unknown_paths_are_404(api: httpx.Client, path: str) -> None:
    assert_v2_error(api.post(path, json={}), 404)


def test_unknown_v1_path_uses_the_v1_error_body(api: httpx.Client) -> None:
    assert_v1_error(api.post("/api/v1/nothing", json={}), 404)


@pytest.mark.parametrize("path", V2_PATHS + V1_PATHS)
def test_get_on_an_event_endpoint_is_405_with_allow(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    (assert_v1_error if "/v1/" in path else assert_v2_error)(response, 405)


def test_post_on_introspect_is_405_with_allow(api: httpx.Client) -> None:
    response = api.post("/api/v2/auth/introspect", json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert_v1_error(api.delete("/api/auth/introspect"), 405)


@pytest.mark.parametrize(("style", "v1_shape"), [("v1", True), ("v2", False)])
def test_error_style_can_be_forced(
    make_sim: Callable[..., SimulatorServer], style: str, v1_shape: bool
) -> None:
    sim = make_sim(error_style=style)
    for path in ("/api/v1/auditevents", "/api/v2/auditevents"):
        response = httpx.post(sim.base_url + path, content=b"nope", headers=bearer(sim.token))
        (assert_v1_error if v1_shape else assert_v2_error)(response, 400)


def test_connections_are_kept_alive(sim: SimulatorServer) -> None:
    request = (
        f"GET /api/v2/auth/introspect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {sim.token}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as conn:
        reader = conn.makefile("rb")
        for _ in range(3):  # three requests, one connection
            conn.sendall(request)
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200")
            length = 0
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert json.loads(reader.read(length))["account_uuid"] == sim.account_uuid


def test_request_log_records_outcomes_without_secrets(sim: SimulatorServer, api: httpx.Client) -> None:
    sim.clear_request_log()
    api.get("/api/v2/auth/introspect")
    api.post("/api/v2/auditevents", json={})
    httpx.post(f"{sim.base_url}/api/v2/auditevents", json={})
    log = sim.request_log
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/api/v2/auth/introspect", 200),
        ("POST", "/api/v2/auditevents", 200),
        ("POST", "/api/v2/auditevents", 401),
    ]
    assert sim.token not in repr(log)
    assert sim.token not in repr(sim)


def test_chunked_request_bodies_are_read(api: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"limit": '
        yield b"3}"

    response = api.post("/api/v2/itemusages", content=chunks(), headers={"content-type": "application/json"})
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200
    assert len(response.json()["items"]) <= 3


def test_history_ends_at_start_up(sim: SimulatorServer) -> None:
    newest = max(parse_ns(e["timestamp"]) for e in sim.events("auditevents"))
    oldest = min(parse_ns(e["timestamp"]) for e in sim.events("auditevents"))
    assert newest < to_ns(T0)
    assert oldest >= to_ns(T0 - timedelta(days=7))
