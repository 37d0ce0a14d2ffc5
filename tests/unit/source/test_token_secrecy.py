"""The token never appears in an exception, a log line or a repr, whatever the server sends back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from opsentinel.errors import OpSentinelError
from opsentinel.source.client import EventsClient
from opsentinel.streams import get_stream

pytestmark = pytest.mark.anyio

AUDIT = get_stream("auditevents")


def echo(
    status: int, template: str, **headers: str
) -> Callable[[str], Callable[[httpx.Request], httpx.Response]]:
    """A handler factory: the response text quotes the request's own Authorization header."""

    def factory(secret: str) -> Callable[[httpx.Request], httpx.Response]:
        def handle(request: httpx.Request) -> httpx.Response:
            auth = request.headers.get("Authorization", "")
            signature = secret.rsplit(".", 1)[-1]
            text = template.format(auth=auth, secret=secret, signature=signature)
            filled = {k: v.format(secret=secret) for k, v in headers.items()}
            return httpx.Response(status, text=text, headers=filled)

        return handle

    return factory


def raising(secret: str) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            f"proxy refused request with {request.headers['Authorization']}", request=request
        )

    return handle


CASES = {
    "401 echoing the header": ("introspect", echo(401, '{{"message": "bad token {auth}"}}')),
    "400 v2 shape echoing the token": (
        "reset",
        echo(400, '{{"status": 400, "message": "token {secret} invalid"}}'),
    ),
    "400 v1 shape echoing the signature": (
        "cursor",
        echo(400, '{{"Error": {{"Message": "sig {signature}"}}}}'),
    ),
    "400 plain text": ("reset", echo(400, "Authorization: {auth}")),
    "403 html": ("reset", echo(403, "<html>{secret}</html>")),
    "404 plain text": ("introspect", echo(404, "no route for {auth}")),
    "500 exhausted": ("reset", echo(500, '{{"message": "crash while handling {secret}"}}')),
    "429 exhausted": ("reset", echo(429, "slow down {auth}")),
    "malformed 200": ("reset", echo(200, '{{"cursor": "{secret}", "has_more"')),
    "malformed introspect": ("introspect", echo(200, '{{"uuid": 5, "features": "{secret}"}}')),
    "redirect with the token in the location": (
        "reset",
        echo(307, "", Location="https://evil.example.com/?t={secret}"),
    ),
    "transport error quoting the header": ("reset", raising),
    "transport error at start-up": ("introspect", raising),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_failing_paths_never_show_the_token(
    case: str, make_client: Callable[..., EventsClient], secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    call, factory = CASES[case]
    caplog.set_level(logging.DEBUG)
    body = {"cursor": "c1"} if call == "cursor" else {"limit": 1000}
    async with make_client(factory(secret)) as client:
        attempt = client.introspect() if call == "introspect" else client.fetch_page(AUDIT, body)
        with pytest.raises(OpSentinelError) as info:
            await attempt
    signature = secret.rsplit(".", 1)[-1]
    texts = [str(info.value), repr(info.value), *map(str, info.value.args), caplog.text]
    for text in texts:
        assert secret not in text
        assert signature not in text
    assert "\n" not in str(info.value)


async def test_rejected_items_and_pages_never_show_the_token(
    make_client: Callable[..., EventsClient], secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body: dict[str, Any] = {"cursor": "c2", "has_more": False, "items": [{"uuid": 5, "leak": secret}]}
    async with make_client(lambda r: httpx.Response(200, json=body)) as client:
        page = await client.fetch_page(AUDIT, {"cursor": "c1"})
    assert page.rejected
    assert secret not in repr(page)
    assert secret not in caplog.text
    assert repr(client).find(secret) == -1
