"""`op-sentinel simulate`: serve the simulator until SIGINT/SIGTERM.

The lead registers it with `app.command("simulate")(simulate_command)`; `python -m
opsentinel.simulator` runs it standalone. User errors are raised as `ConfigError` (one line).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from opsentinel.errors import ConfigError
from opsentinel.simulator.config import DEFAULT_AUDIENCE, SimulatorConfig
from opsentinel.streams import FEATURES, STREAM_NAMES

if TYPE_CHECKING:
    from opsentinel.simulator.server import SimulatorServer

DEFAULT_PORT = 8080
DEFAULT_TRICKLE = 12.0  # events per minute per stream: one every five seconds
LOOPBACK_NAMES = ("localhost",)


class ErrorStyleOption(StrEnum):
    auto = "auto"
    v1 = "v1"
    v2 = "v2"


class MissingBodyOption(StrEnum):
    reset = "reset"
    error = "error"


def parse_latency(text: str) -> float:
    """Seconds from `250ms`, `1.5s` or a bare number of seconds; ConfigError otherwise."""
    value = text.strip().lower()
    scale = 1.0
    if value.endswith("ms"):
        value, scale = value[:-2], 0.001
    elif value.endswith("s"):
        value = value[:-1]
    try:
        seconds = float(value) * scale
    except ValueError:
        raise ConfigError(f"--latency: expected e.g. 250ms or 0.25s, got {text!r}") from None
    if not 0 <= seconds <= 600:
        raise ConfigError("--latency must be between 0 and 600 seconds")
    return seconds


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def write_token_file(path: Path, token: str) -> None:
    """Write `token` to `path`, readable by the owner only (0600), replacing what was there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(token + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write token file {path}: {exc.strerror}") from exc


def simulate_command(
    host: Annotated[
        str, typer.Option(help="Address to listen on. Only loopback unless --allow-remote.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.", min=0, max=65535)] = DEFAULT_PORT,
    seed: Annotated[int, typer.Option(help="Seed of all generated data, keys and tokens.")] = 1,
    events: Annotated[
        int, typer.Option(help="History events per stream (scales to millions, generated on demand).", min=0)
    ] = 5000,
    days: Annotated[
        float, typer.Option(help="The history is spread over this many days, ending at start-up.", min=0.001)
    ] = 7.0,
    trickle: Annotated[
        float, typer.Option(help="New live events per minute per stream while running; 0 disables.", min=0)
    ] = DEFAULT_TRICKLE,
    latency: Annotated[
        str, typer.Option(help="Delay added to every request, e.g. 250ms or 0.5s (others run meanwhile).")
    ] = "0",
    rate_limit_per_minute: Annotated[
        int, typer.Option(help="Requests per minute per account before 429; 0 disables.", min=0)
    ] = 600,
    rate_limit_per_hour: Annotated[
        int, typer.Option(help="Requests per hour per account before 429; 0 disables.", min=0)
    ] = 30_000,
    no_retry_after: Annotated[
        bool, typer.Option("--no-retry-after", help="Send 429 without a Retry-After header.")
    ] = False,
    audience: Annotated[
        str, typer.Option(help="The events host tokens are issued for (their `aud` claim).")
    ] = DEFAULT_AUDIENCE,
    features: Annotated[str, typer.Option(help="Comma-separated features of the printed token.")] = ",".join(
        FEATURES
    ),
    token_file: Annotated[
        Path | None, typer.Option(help="Also write the token to this file (mode 0600).")
    ] = None,
    error_style: Annotated[
        ErrorStyleOption,
        typer.Option(help="Error bodies: auto (V1 paths {Error:{Message}}, V2 {status,message}), v1 or v2."),
    ] = ErrorStyleOption.auto,
    missing_body: Annotated[
        MissingBodyOption, typer.Option(help="A POST without a body: reset (treat as {}) or error (400).")
    ] = MissingBodyOption.reset,
    page_cap: Annotated[
        int | None, typer.Option(help="Serve at most this many events per page, whatever the limit.", min=1)
    ] = None,
    error_rate: Annotated[
        float,
        typer.Option(
            help="Fraction (0-1) of event requests answered 503, to exercise retries.", min=0, max=1
        ),
    ] = 0.0,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow listening on a non-loopback address.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every request to stderr.")] = False,
) -> None:
    """Serve a faithful 1Password Events API with generated data on loopback; print its URL and a token.

    Runs until SIGINT or SIGTERM, then exits 0. Same --seed and --events give the same events.
    """
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            f"--host {host} is not a loopback address; add --allow-remote to serve there anyway"
        )
    wanted = tuple(f.strip() for f in features.split(",") if f.strip())
    unknown = sorted(set(wanted) - set(FEATURES))
    if unknown:
        raise ConfigError(f"--features: unknown feature {', '.join(unknown)} (known: {', '.join(FEATURES)})")
    from opsentinel.simulator.faults import Fault
    from opsentinel.simulator.server import SimulatorServer

    faults: tuple[Fault, ...] = ()
    if error_rate > 0:
        faults = tuple(Fault.error(503, stream=s, times=None, probability=error_rate) for s in STREAM_NAMES)
    config = SimulatorConfig(
        host=host,
        port=port,
        seed=seed,
        events=events,
        days=days,
        trickle=trickle,
        latency=parse_latency(latency),
        rate_limit_per_minute=rate_limit_per_minute,
        rate_limit_per_hour=rate_limit_per_hour,
        retry_after=not no_retry_after,
        audience=audience,
        features=wanted,
        error_style=error_style.value,
        missing_body=missing_body.value,
        page_cap=page_cap,
        faults=faults,
    )
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sim = SimulatorServer(config)
    try:
        sim.start(verbose=verbose)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        if token_file is not None:
            write_token_file(token_file, sim.token)
        _print_banner(sim, config, token_file)
        _wait_for_signal()
    finally:
        sim.stop()
    print("simulator stopped", file=sys.stderr)


def _print_banner(sim: SimulatorServer, config: SimulatorConfig, token_file: Path | None) -> None:
    url = sim.base_url
    lines = [
        f"base URL: {url}",
        f"token: {sim.token}",
        f"account: {sim.account_uuid}",
        f"features: {', '.join(config.features) or '(none)'}",
        f"data: seed {config.seed}, {config.events} events per stream over {config.days:g} days, "
        f"{config.trickle:g} new per minute per stream",
    ]
    if token_file is not None:
        lines.append(f"token file: {token_file}")
        token_ref = f'"$(cat {token_file})"'
    else:
        token_ref = "'<token above>'"  # noqa: S105 - a placeholder, not a secret
    lines += [
        "try:",
        f"  OP_SENTINEL_TOKEN={token_ref} op-sentinel check --base-url {url}",
        f"  OP_SENTINEL_TOKEN={token_ref} op-sentinel run --once --base-url {url} --db simulated.duckdb",
        "stop with Ctrl-C",
    ]
    print("\n".join(lines), flush=True)


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (handlers restored afterwards)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread: rely on KeyboardInterrupt
        pass
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
