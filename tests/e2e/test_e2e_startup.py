"""Start-up as a user meets it: token features, introspect failures and base URL rules. Each problem
is one `error:` line and a non-zero status, never a traceback, never a retry storm."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.e2ehelp import (
    STREAMS,
    CliResult,
    assert_exactly_once,
    assert_one_error_line,
    stored_uuids,
    write_token,
)

from opsentinel.simulator import Fault, SimulatorConfig, SimulatorServer
from opsentinel.streams import INTROSPECT_V2_PATH

Cli = Callable[..., CliResult]


def _introspects(sim: SimulatorServer) -> int:
    return sum(1 for r in sim.request_log if r.path == INTROSPECT_V2_PATH)


# --- token features -------------------------------------------------------------------------------


def test_a_stream_the_token_lacks_is_skipped_with_one_warning_and_the_others_run(
    sim: SimulatorServer, tmp_path: Path, db_path: Path, cli: Cli
) -> None:
    token = write_token(tmp_path / "partial", sim.issue_token(features=["auditevents", "itemusages"]))
    args = ["--base-url", sim.base_url, "--token-file", token, "--db", db_path]

    result = cli(["run", "--once", *args])

    assert result.code == 0, result.err
    [warning] = result.warnings("signinattempts")
    assert "lacks" in warning
    assert_exactly_once(db_path, sim, ("auditevents", "itemusages"))
    assert stored_uuids(db_path, "signinattempts") == []
    assert not any(r.path.endswith("signinattempts") for r in sim.request_log)

    check = cli(["check", *args])
    assert check.code == 0, check.err
    assert "streams:   auditevents, itemusages" in check.out
    assert "skipped:   signinattempts" in check.out


def test_naming_a_stream_the_token_lacks_skips_it_too(
    sim: SimulatorServer, tmp_path: Path, db_path: Path, cli: Cli
) -> None:
    token = write_token(tmp_path / "partial", sim.issue_token(features=["auditevents"]))
    args = ["--base-url", sim.base_url, "--token-file", token, "--db", db_path]

    result = cli(["run", "--once", *args, "--streams", "auditevents,itemusages"])

    assert result.code == 0, result.err
    assert len(result.warnings("itemusages")) == 1
    assert_exactly_once(db_path, sim, ("auditevents",))


@pytest.mark.parametrize("features", [["signinattempts"], []])
def test_a_token_with_none_of_the_requested_features_fails_with_one_line(
    sim: SimulatorServer, tmp_path: Path, db_path: Path, cli: Cli, features: list[str]
) -> None:
    token = write_token(tmp_path / "narrow", sim.issue_token(features=features))
    args = ["--base-url", sim.base_url, "--token-file", token, "--db", db_path]

    for command in (["run", "--once"], ["check"]):
        result = cli([*command, *args, "--streams", "auditevents,itemusages"])
        line = assert_one_error_line(result, code=2)
        assert "auditevents" in line
        assert "itemusages" in line
    assert not any(r.method == "POST" for r in sim.request_log)


# --- introspect failures --------------------------------------------------------------------------


def test_a_token_signed_by_another_key_is_rejected_once_with_one_line(
    sim: SimulatorServer, tmp_path: Path, db_path: Path, cli: Cli
) -> None:
    foreign = SimulatorServer(SimulatorConfig(events=1, seed=999)).issue_token()
    token = write_token(tmp_path / "foreign", foreign)
    sim.clear_request_log()

    for command in (["run", "--once"], ["check"]):
        result = cli([*command, "--base-url", sim.base_url, "--token-file", token, "--db", db_path])
        line = assert_one_error_line(result, code=2)
        assert "401" in line
        assert "token" in line
    assert _introspects(sim) == 2  # one per command: a 401 is never retried
    assert not db_path.exists()


def test_an_unreachable_host_fails_fast_with_one_line(
    sim: SimulatorServer, token_file: Path, db_path: Path, cli: Cli
) -> None:
    port = _closed_port()  # nothing listens there: connection refused
    result = cli(["run", "--once", "--base-url", f"http://127.0.0.1:{port}", "--token-file", token_file])

    line = assert_one_error_line(result, code=2)
    assert f"127.0.0.1:{port}" in line
    assert "connection refused" in line


class _HtmlHandler(BaseHTTPRequestHandler):
    """A web server that is not the Events API: every request gets an HTML page."""

    hits = 0

    def _page(self) -> None:
        type(self).hits += 1
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    _HtmlHandler.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_answers_html_fails_with_one_line_and_few_requests(
    html_server: str, token_file: Path, cli: Cli
) -> None:
    result = cli(["check", "--base-url", html_server, "--token-file", token_file])

    line = assert_one_error_line(result)
    assert "introspect" in line or "/api/v2/auth/introspect" in line
    assert 1 <= _HtmlHandler.hits <= 3


def test_a_truncated_introspect_answer_fails_with_one_line_and_few_requests(
    sim: SimulatorServer, token_file: Path, db_path: Path, cli: Cli
) -> None:
    sim.faults.add(Fault.truncate(path=INTROSPECT_V2_PATH, times=None))
    sim.clear_request_log()

    result = cli(["run", "--once", "--base-url", sim.base_url, "--token-file", token_file, "--db", db_path])

    line = assert_one_error_line(result)
    assert "malformed" in line or "JSON" in line
    assert 1 <= _introspects(sim) <= 3


def test_a_server_in_trouble_at_start_up_fails_after_a_few_tries(
    sim: SimulatorServer, token_file: Path, db_path: Path, cli: Cli
) -> None:
    sim.faults.add(Fault.error(503, path=INTROSPECT_V2_PATH, times=None))
    sim.clear_request_log()

    result = cli(["check", "--base-url", sim.base_url, "--token-file", token_file, "--db", db_path])

    line = assert_one_error_line(result)
    assert "503" in line
    assert 1 <= _introspects(sim) <= 3


def test_a_brief_hiccup_at_start_up_is_retried(
    sim: SimulatorServer, sim_args: list[str], db_path: Path, cli: Cli
) -> None:
    sim.faults.add(Fault.error(502, path=INTROSPECT_V2_PATH, times=1))

    result = cli(["run", "--once", *sim_args])

    assert result.code == 0, result.err
    assert_exactly_once(db_path, sim, STREAMS)


# --- base URL rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://events.1password.com/", "'/'"),
        ("http://events.1password.com", "https://"),
        ("https://events.example.com", "--allow-custom-host"),
        ("https://events.1password.com/api/v2", "path"),
        ("{sim}/", "'/'"),
    ],
)
def test_a_bad_base_url_is_one_line_and_exit_2_before_any_request(
    sim: SimulatorServer, token_file: Path, db_path: Path, cli: Cli, url: str, says: str
) -> None:
    base = url.format(sim=sim.base_url)
    for command in (["check"], ["run", "--once"]):
        result = cli([*command, "--base-url", base, "--token-file", token_file, "--db", db_path])
        line = assert_one_error_line(result, code=2)
        assert says in line
    assert sim.request_log == []
    assert not db_path.exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_custom_host_is_accepted_only_with_allow_custom_host(token_file: Path, cli: Cli) -> None:
    # 127.0.0.2 is not one of the loopback names the rules accept: it is a custom host.
    args = ["check", "--base-url", f"https://127.0.0.2:{_closed_port()}", "--token-file", token_file]
    refused = cli(args)
    assert "--allow-custom-host" in assert_one_error_line(refused, code=2)

    # With the flag the URL passes the rules and the connector tries it (nothing listens there).
    allowed = cli([*args, "--allow-custom-host"])
    line = assert_one_error_line(allowed, code=2)
    assert "cannot reach" in line
    assert "127.0.0.2" in line
