"""op-sentinel on Azure Functions: what the app's `function_app.py` wires to its triggers.

The Functions app (`op-sentinel azure package` builds it; the files are in opsentinel/azure/functionapp/)
has two functions, both thin calls into `AppHost`:

- `tick`, a timer (schedule: the app setting OP_SENTINEL_SCHEDULE, every minute by default; the host
  runs it on one instance at a time and never overlaps it with itself). It runs one bounded cycle over
  the Blob state (`opsentinel.cycle.run_cycle`): each free (account, stream) unit is leased, drained
  until the API says it caught up or the invocation's deadline comes, committed and released. With
  OP_SENTINEL_FANOUT on, it works nothing itself: it puts one message per account that has a free
  unit on the queue `op-sentinel-accounts`.
- `work`, a queue trigger on that queue: one bounded cycle over the units of the account the message
  names. Queue delivery is at least once: a duplicate finds the leases taken and returns.

Fan-out is per account, not per unit: an account's streams share one rate budget (600 requests a
minute per token), which two instances working its streams at once would each take whole.

The deadline is the app's `functionTimeout` (host.json) minus a margin: a cycle stops at a page
boundary and commits before the host would stop the invocation. Health rows are written only when
due (state change, or 15 minutes since the last), whatever the schedule.

Errors: a setting or token problem is logged as one line and fails the timer invocation (Application
Insights shows it as failed); a queue invocation logs it and returns, since a failure would make the
host deliver the same message again at once, and the next tick enqueues the account anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from opsentinel.config import Settings, load_settings
from opsentinel.cycle import CycleReport, run_cycle
from opsentinel.errors import ConfigError, OpSentinelError

__all__ = [
    "CONFIG_FILE",
    "FANOUT_SETTING",
    "HOST_SETTINGS",
    "QUEUE_CONNECTION",
    "QUEUE_NAME",
    "SCHEDULE_EXPRESSION",
    "SCHEDULE_SETTING",
    "AppHost",
    "InvocationFailed",
    "TickReport",
    "cycle_deadline",
    "function_timeout",
]

log = logging.getLogger("opsentinel")

SCHEDULE_SETTING: Final = "OP_SENTINEL_SCHEDULE"
SCHEDULE_EXPRESSION: Final = f"%{SCHEDULE_SETTING}%"  # the host resolves %NAME% from the app settings
FANOUT_SETTING: Final = "OP_SENTINEL_FANOUT"
# App settings the Functions app reads besides op-sentinel's own (config.SPECS).
HOST_SETTINGS: Final = (SCHEDULE_SETTING, FANOUT_SETTING)
QUEUE_NAME: Final = "op-sentinel-accounts"
QUEUE_CONNECTION: Final = "AzureWebJobsStorage"  # the host's storage, by identity (AzureWebJobsStorage__*)
CONFIG_FILE: Final = "op-sentinel.toml"  # next to function_app.py: the [[account]] tables, if any
DEFAULT_TIMEOUT: Final = 30 * 60.0  # Flex Consumption's functionTimeout when host.json sets none (or -1)
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?$")
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


class InvocationFailed(Exception):
    """Fails the invocation with one line (the host records it; Application Insights shows it)."""


class _Out(Protocol):
    """The queue output binding (azure.functions.Out[list[str]])."""

    def set(self, val: list[str]) -> None: ...


@dataclass
class TickReport:
    """What one timer invocation did: a cycle, or the accounts it put on the queue."""

    cycle: CycleReport | None = None
    enqueued: list[str] = field(default_factory=list)


def function_timeout(host_json: Path) -> float:
    """The app's functionTimeout in seconds, from host.json (`[d.]hh:mm:ss`); Flex Consumption's
    default when it is missing or unbounded (-1): a cycle needs an end either way."""
    try:
        value = json.loads(host_json.read_text(encoding="utf-8")).get("functionTimeout")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_TIMEOUT
    found = _TIMESPAN.match(str(value).strip()) if value is not None else None
    if found is None:
        return DEFAULT_TIMEOUT
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    total = float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    return total if total > 0 else DEFAULT_TIMEOUT


def cycle_deadline(timeout: float) -> float:
    """Seconds a cycle may take in an invocation of `timeout` seconds: a margin (10% of it, 10-60 s)
    is kept for starting, closing and releasing before the host would stop the invocation."""
    return timeout - min(60.0, max(10.0, timeout * 0.1))


class AppHost:
    """The Functions app's logic; `root` is the directory holding function_app.py and host.json."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.timeout = function_timeout(root / "host.json")

    # -- the two functions -----------------------------------------------------------------------

    async def tick(self, timer: Any, fanout: _Out | None = None, context: Any = None) -> TickReport:
        """The timer: one cycle over every free unit, or (OP_SENTINEL_FANOUT) the queue messages."""
        started = time.monotonic()
        if getattr(timer, "past_due", False):
            log.info("the timer is past due (the app was stopped or busy); running now")
        try:
            settings = self.settings(context)
            if self.fans_out():
                if fanout is None:
                    raise ConfigError(f"{FANOUT_SETTING} is on but the function has no queue output")
                messages = await self.enqueue(settings)
                fanout.set(messages)
                return TickReport(enqueued=messages)
            report = await run_cycle(settings, deadline=self._left(started))
        except OpSentinelError as exc:
            log.error("op-sentinel: %s", exc)
            raise InvocationFailed(str(exc)) from None
        problems = _log_report(report)
        if problems:
            raise InvocationFailed(problems[0] if len(problems) == 1 else f"{problems[0]} (and more)")
        return TickReport(cycle=report)

    async def work(self, message: Any, context: Any = None) -> CycleReport | None:
        """The queue trigger: one cycle over the units of the account the message names."""
        started = time.monotonic()
        name = _account_of(message)
        if name is None:
            log.error("op-sentinel: ignoring a queue message that names no account")
            return None
        try:
            settings = self.settings(context)
            narrowed = _only_account(settings, name)
            if narrowed is None:
                log.warning("op-sentinel: no account %r in the configuration; message ignored", name)
                return None
            report = await run_cycle(narrowed, deadline=self._left(started))
        except OpSentinelError as exc:
            log.error("op-sentinel: account %s: %s", name, exc)
            return None
        _log_report(report)
        return report

    # -- pieces ----------------------------------------------------------------------------------

    def settings(self, context: Any = None) -> Settings:
        """The settings of one invocation: app settings (the environment) over the config file.
        Each invocation is a replica of its own, named after the invocation id."""
        env = os.environ
        config = self.root / CONFIG_FILE
        settings = load_settings({}, environ=env, config_path=config if config.is_file() else None)
        if settings.state_url is None:
            raise ConfigError(
                "the Functions app needs a Blob state: set OP_SENTINEL_STATE to "
                "https://ACCOUNT.blob.core.windows.net/CONTAINER"
            )
        _configure_logging(settings.log_level)
        invocation = str(getattr(context, "invocation_id", "") or "")
        suffix = re.sub(r"[^A-Za-z0-9]", "", invocation)[:8]
        if suffix:
            prefix = env.get("OP_SENTINEL_REPLICA_ID", "").strip() or "fn"
            settings = settings.model_copy(update={"replica_id": f"{prefix[:50]}-{suffix}"})
        return settings

    def fans_out(self) -> bool:
        value = os.environ.get(FANOUT_SETTING, "").strip().lower()
        if value in _ON:
            return True
        if value in _OFF:
            return False
        raise ConfigError(f"invalid {FANOUT_SETTING}: expected 1 or 0, got {value[:20]!r}")

    async def enqueue(self, settings: Settings) -> list[str]:
        """One message per account with a free unit (an account whose every known unit is leased
        is being worked: a message would only find the leases taken)."""
        accounts = _accounts(settings)
        membership = await asyncio.to_thread(_membership, settings.state)
        messages = []
        for name, uuid in accounts:
            units = [u for u in membership if u[0] == uuid] if uuid else []
            if units and all(leased for _, leased in units):
                log.info("account %s: every unit is being worked; not enqueued", name)
                continue
            messages.append(json.dumps({"account": name}))
        log.info("enqueued %d of %d account(s) on %s", len(messages), len(accounts), QUEUE_NAME)
        return messages

    def _left(self, started: float) -> float:
        return cycle_deadline(self.timeout) - (time.monotonic() - started)


def _configure_logging(level: str) -> None:
    # The Functions worker sends Python log records to Application Insights; azure-core would log
    # every storage and ingestion request at INFO.
    logging.getLogger("opsentinel").setLevel(level.upper())
    logging.getLogger("azure").setLevel(logging.WARNING if level != "debug" else logging.INFO)


def _log_report(report: CycleReport) -> list[str]:
    """Log the cycle's outcome (one line per problem); returns the problems."""
    problems = [f"account {name}: {error}" for name, error in report.failed_accounts.items()]
    problems += [f"{u.stream} of account {u.account}: {u.error}" for u in report.units if u.error]
    for problem in problems:
        log.error("op-sentinel: %s", problem)
    worked = [u for u in report.units if u.skipped_for is None]
    log.info(
        "op-sentinel cycle: %d unit(s) worked (%d event(s), %d stopped at the deadline), %d held elsewhere",
        len(worked),
        sum(u.events for u in worked),
        sum(1 for u in worked if u.stopped),
        len(report.units) - len(worked),
    )
    return problems


def _account_of(message: Any) -> str | None:
    try:
        body = message.get_body()
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except (AttributeError, UnicodeDecodeError, ValueError):
        return None
    name = data.get("account") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def _only_account(settings: Settings, name: str) -> Settings | None:
    """The settings with only account `name` (so the cycle starts that account alone), or None."""
    if not settings.accounts:
        return settings if name == "default" else None
    tables = tuple(t for t in settings.accounts if t.get("name") == name)
    return settings.model_copy(update={"accounts": tables}) if tables else None


def _accounts(settings: Settings) -> list[tuple[str, str | None]]:
    """(name, account uuid) of every account; the uuid from the token's claims (no request), None
    when it cannot be read (the queue invocation then reports why)."""
    from opsentinel.accounts import account_settings

    def uuid(account: Settings) -> str | None:
        with contextlib.suppress(OpSentinelError, ValueError):
            return account.api_token().claims.account
        return None

    try:
        return [(a.account_name or "default", uuid(a)) for a in account_settings(settings)]
    except ConfigError:
        return [(str(t["name"]), None) for t in settings.accounts] or [("default", None)]


def _membership(state_url: str) -> Sequence[tuple[str, bool]]:
    """(account uuid, leased) of every unit in the Blob state: one listing."""
    from opsentinel.checkpoints.blobaccess import BlobState
    from opsentinel.checkpoints.membership import read_membership

    state = BlobState.open(state_url)
    try:
        return [(u.account, u.leased) for u in read_membership(state).units]
    finally:
        state.close()
