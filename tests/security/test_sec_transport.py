"""Where the token may go: TLS is always verified (no setting or variable turns it off for a remote
host), the base URL rules of interface.md are enforced before any request is made, and a redirect
is never followed, so neither the token nor the events reach another host."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import trustme
from azure.core.credentials import AccessToken
from tests.reliability.relhelp import cli_in_process, write_token
from tests.security.sechelp import Answer, LocalServer, Seen

from opsentinel.errors import ConfigError, FatalError
from opsentinel.simulator import SimulatorConfig, SimulatorServer
from opsentinel.sinks.base import Batch
from opsentinel.sinks.sentinel import SentinelSink
from opsentinel.source.client import EventsClient
from opsentinel.source.token import ApiToken

STREAMS = ("auditevents", "signinattempts", "itemusages")


@pytest.fixture(scope="module")
def sim() -> SimulatorServer:
    server = SimulatorServer(SimulatorConfig(events=20, seed=5)).start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture(autouse=True)
def _scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `check` opens the default store, ./op-sentinel.duckdb: keep it out of the working tree.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def token_file(tmp_path: Path, sim: SimulatorServer) -> Path:
    return write_token(tmp_path / "op-token", sim.token)


def _introspect_ok(seen: Seen) -> Answer:
    if seen.path == "/api/v2/auth/introspect":
        body = {
            "uuid": "INTEGRATION",
            "issued_at": "2026-01-01T00:00:00Z",
            "features": list(STREAMS),
            "account_uuid": "ACCT",
        }
        return Answer(200, orjson.dumps(body), (("Content-Type", "application/json"),))
    return Answer(404, b"{}")


def _one_error(result: object) -> str:
    errors = result.errors  # type: ignore[attr-defined]
    assert result.code != 0 and len(errors) == 1, result  # type: ignore[attr-defined]
    assert "Traceback" not in result.err  # type: ignore[attr-defined]
    return str(errors[0])


# --- TLS ------------------------------------------------------------------------------------------

# Variables that turn certificate checks off (or to an empty CA list) in other tools.
INSECURE_ENV = {"PYTHONHTTPSVERIFY": "0", "CURL_CA_BUNDLE": "", "REQUESTS_CA_BUNDLE": ""}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"], ids=["loopback", "custom-host"])
def test_an_untrusted_certificate_stops_check_before_any_request(
    host: str, token_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in INSECURE_ENV.items():
        monkeypatch.setenv(name, value)
    with LocalServer(_introspect_ok, host=host, ca=trustme.CA()) as server:
        result = cli_in_process(
            ["check", "--base-url", server.url, "--token-file", token_file, "--allow-custom-host"], capsys
        )
    assert "TLS certificate verification failed" in _one_error(result)
    assert server.seen == [], "a request went out over an unverified connection"


def test_a_bad_ca_bundle_setting_is_one_line(
    token_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/dev/null")
    result = cli_in_process(
        ["check", "--base-url", "https://events.1password.com", "--token-file", token_file], capsys
    )
    assert "cannot load CA certificates from SSL_CERT_FILE=/dev/null" in _one_error(result)
    assert result.code == 2


def test_tls_verification_cannot_be_turned_off_for_a_remote_host() -> None:
    token = ApiToken("not-a-jwt-but-a-secret")
    with pytest.raises(ConfigError, match="cannot be turned off"):
        EventsClient("https://events.1password.com", token, verify=False)
    with pytest.raises(ConfigError, match="cannot be turned off"):
        SentinelSink(
            "https://dce-a1b2.westeurope-1.ingest.monitor.azure.com",
            "dcr-" + "0" * 32,
            credential=object(),  # type: ignore[arg-type]
            dead_letter_dir=Path("unused"),
            connection_verify=False,
        )


def test_an_untrusted_logs_ingestion_certificate_stops_check(
    sim: SimulatorServer,
    token_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_managed_identity: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with LocalServer(lambda seen: Answer(204), ca=trustme.CA()) as dce:
        result = cli_in_process(
            ["check", "--base-url", sim.base_url, "--token-file", token_file, "--sink", "sentinel",
             "--dce", dce.url, "--dcr-id", "dcr-" + "1" * 32, "--state", tmp_path / "state"],
            capsys,
        )  # fmt: skip
    assert "TLS verification failed for the Logs Ingestion endpoint" in _one_error(result)
    assert dce.seen == []


# --- base URL rules -------------------------------------------------------------------------------


BAD_BASE_URLS = {
    "trailing slash": "{url}/",
    "path": "{url}/api/v2",
    "query": "{url}?region=eu",
    "fragment": "{url}#x",
    "user info": "http://user:hunter2@127.0.0.1:{port}",
    "no scheme": "127.0.0.1:{port}",
    "other scheme": "ftp://127.0.0.1:{port}",
    "http to a custom host": "http://127.0.0.2:{port}",
    "lookalike host": "https://events.1password.com.evil.example",
    "official host in the path": "https://evil.example/events.1password.com",
    "http to an official host": "http://events.1password.com",
    "space": " {url}",
    "backslash": "http://127.0.0.1:{port}\\@events.1password.com",
}


@pytest.mark.parametrize("name", list(BAD_BASE_URLS))
def test_base_url_rules_refuse_before_any_request(
    name: str, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalServer(_introspect_ok) as server:
        base = BAD_BASE_URLS[name].format(url=server.url, port=server.port)
        flags = ["--allow-custom-host"] if name == "http to a custom host" else []
        result = cli_in_process(["check", "--base-url", base, "--token-file", token_file, *flags], capsys)
    line = _one_error(result)
    assert result.code == 2
    assert "base URL" in line
    assert "hunter2" not in result.out + result.err
    assert server.seen == []


def test_a_custom_host_needs_allow_custom_host(
    sim: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A token whose audience names some other host: the base URL derived from it is refused.
    foreign = write_token(tmp_path / "foreign", sim.issue_token(audience="events.example.net"))
    result = cli_in_process(["check", "--token-file", foreign], capsys)
    assert "not an official 1Password Events API host" in _one_error(result)
    assert "--allow-custom-host" in result.err


def test_the_token_goes_only_to_the_base_url_host(
    sim: SimulatorServer, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalServer(_introspect_ok) as server:
        ok = cli_in_process(["check", "--base-url", server.url, "--token-file", token_file], capsys)
    assert ok.code == 0, ok.err
    assert [s.headers.get("authorization") for s in server.seen] == [f"Bearer {sim.token}"]


# --- redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirected_introspect_is_not_followed(
    status: int, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalServer(_introspect_ok, host="127.0.0.2") as elsewhere:

        def redirect(seen: Seen) -> Answer:
            return Answer(status, b"", (("Location", f"{elsewhere.url}{seen.path}"),))

        with LocalServer(redirect) as server:
            result = cli_in_process(["check", "--base-url", server.url, "--token-file", token_file], capsys)
    line = _one_error(result)
    assert "redirect" in line and "127.0.0.2" in line
    assert elsewhere.seen == [], "the redirect was followed"


def test_redirected_event_requests_are_not_followed(
    token_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalServer(_introspect_ok, host="127.0.0.2") as elsewhere:

        def redirect_events(seen: Seen) -> Answer:
            if seen.method == "POST":
                return Answer(307, b"", (("Location", f"{elsewhere.url}{seen.path}"),))
            return _introspect_ok(seen)

        with LocalServer(redirect_events) as server:
            db = tmp_path / "s.duckdb"
            result = cli_in_process(
                ["run", "--once", "--base-url", server.url, "--token-file", token_file, "--db", db], capsys
            )
    assert result.code == 1
    assert result.err.count("redirected") >= len(STREAMS)
    assert elsewhere.seen == []


class _Credential:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("azure-access-token-secret", int(time.time()) + 3600)


@pytest.mark.parametrize("status", [302, 307, 308])
def test_a_redirected_upload_is_not_followed(status: int, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    with LocalServer(lambda seen: Answer(204), ca=ca) as elsewhere:

        def redirect(seen: Seen) -> Answer:
            return Answer(status, b"", (("Location", f"https://localhost:{elsewhere.port}{seen.path}"),))

        with LocalServer(redirect, ca=ca) as dce:
            sink = SentinelSink(
                dce.url,
                "dcr-" + "2" * 32,
                credential=_Credential(),
                dead_letter_dir=tmp_path / "state",
                connection_verify=str(ca_path),
            )
            try:
                event = {"uuid": "EV1", "timestamp": "2026-01-01T00:00:00Z", "category": "success"}
                with pytest.raises(FatalError, match=str(status)):
                    sink.write(Batch("signinattempts", [event], datetime.now(UTC)))
            finally:
                sink.close()
    assert len(dce.seen) == 1
    assert elsewhere.seen == [], "the events were delivered to the host the redirect named"
