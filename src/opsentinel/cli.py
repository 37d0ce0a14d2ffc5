"""The `op-sentinel` command: a thin Typer shell over the library.

It parses flags, builds Settings, calls the library, and maps errors to exit codes: a UserError (or
any op-sentinel error) is one line on stderr and exit status 2 (1 for a failed run); never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from opsentinel import __version__
from opsentinel.errors import OpSentinelError, UserError
from opsentinel.runtime import tune_process

app = typer.Typer(
    name="op-sentinel",
    help="Bring 1Password security events (audit events, sign-in attempts, item usages) into "
    "Microsoft Sentinel's OnePasswordEventLogs_CL table, or into a local DuckDB table of the same shape.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Options shared by the commands that talk to the Events API or a store. Each is also an environment
# variable and a key of the TOML config file (see `load_settings`); a flag wins.
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file [default: op-sentinel.toml if present]"),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="Events API base URL, e.g. https://events.1password.com (no trailing /) "
        "[env OP_SENTINEL_BASE_URL; default: from the token]",
    ),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option("--token-file", help="File holding the API token [or env OP_SENTINEL_TOKEN]"),
]
StreamsOpt = Annotated[
    str | None,
    typer.Option(
        "--streams",
        help="Comma-separated: auditevents,signinattempts,itemusages [env OP_SENTINEL_STREAMS; "
        "default: all the token allows]",
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="First-run start, RFC 3339 [env OP_SENTINEL_SINCE]"),
]
LookbackOpt = Annotated[
    str | None,
    typer.Option(
        "--lookback",
        help="First-run start as a duration back from now, e.g. 7d, 36h [env OP_SENTINEL_LOOKBACK; "
        "default 7d; at most 120d]",
    ),
]
SinkOpt = Annotated[
    str | None,
    typer.Option("--sink", help="duckdb | sentinel | jsonl [env OP_SENTINEL_SINK; default duckdb]"),
]
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="DuckDB file [env OP_SENTINEL_DB; default op-sentinel.duckdb]"),
]
JsonlOpt = Annotated[
    Path | None,
    typer.Option(
        "--jsonl-path",
        help="Output of the jsonl sink, - for stdout [env OP_SENTINEL_JSONL; default op-sentinel.jsonl]",
    ),
]
DceOpt = Annotated[
    str | None,
    typer.Option("--dce", help="Logs Ingestion endpoint (DCE or DCR endpoint URL) [env OP_SENTINEL_DCE]"),
]
DcrIdOpt = Annotated[
    str | None,
    typer.Option("--dcr-id", help="DCR immutable id, dcr-... [env OP_SENTINEL_DCR_ID]"),
]
DcrStreamOpt = Annotated[
    str | None,
    typer.Option(
        "--stream",
        help="DCR stream [env OP_SENTINEL_STREAM; default Custom-OnePasswordEventLogs_CL]",
    ),
]
HistoryStreamOpt = Annotated[
    str | None,
    typer.Option(
        "--history-stream",
        help="DCR stream for events older than a stream's first run (kept out of the analytic rules' "
        "table); none sends no history [env OP_SENTINEL_HISTORY_STREAM; "
        "default Custom-OnePasswordEventLogsHistory_CL]",
    ),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        help="Checkpoints of non-DuckDB sinks: a directory, or an Azure Blob container URL "
        "(https://ACCOUNT.blob.core.windows.net/CONTAINER) that replicas share [env OP_SENTINEL_STATE; "
        "default .op-sentinel/]",
    ),
]
PollOpt = Annotated[
    str | None,
    typer.Option(
        "--poll-interval",
        help="Wait between polls of a drained stream, e.g. 10s [env OP_SENTINEL_POLL_INTERVAL; default 10s]",
    ),
]
HealthOpt = Annotated[
    str | None,
    typer.Option(
        "--health-interval",
        help="How often health rows are written, e.g. 15m [env OP_SENTINEL_HEALTH_INTERVAL; default 15m]",
    ),
]
BackfillOpt = Annotated[
    int | None,
    typer.Option(
        "--backfill-workers",
        help="History slices paged at once on a stream's first run; 0 reads history with one cursor "
        "[env OP_SENTINEL_BACKFILL_WORKERS; default 8]",
    ),
]
LateWindowOpt = Annotated[
    str | None,
    typer.Option(
        "--late-window",
        help="How late an event may reach the API after its own time and still be collected on every "
        "path (hand-over, restarts, a rejected cursor), e.g. 24h [env OP_SENTINEL_LATE_WINDOW; default 24h]",
    ),
]
ReplicaOpt = Annotated[
    str | None,
    typer.Option(
        "--replica-id",
        help="This process's name among replicas sharing a Blob state (User-Agent, logs, health rows) "
        "[env OP_SENTINEL_REPLICA_ID; default: 8 random hex characters per start]",
    ),
]
CustomHostOpt = Annotated[
    bool | None,
    typer.Option(
        "--allow-custom-host",
        help="Accept a base URL host other than the four official ones [env OP_SENTINEL_ALLOW_CUSTOM_HOST=1]",
    ),
]
LogLevelOpt = Annotated[
    str | None,
    typer.Option(
        "--log-level", help="debug | info | warning | error [env OP_SENTINEL_LOG_LEVEL; default info]"
    ),
]


def _settings(config: Path | None, **flags: Any) -> Any:
    from opsentinel.config import load_settings

    settings = load_settings(flags, config_path=config)
    # Replicas share one Blob state: every line says which one wrote it.
    _configure_logging(settings.log_level, settings.replica_id if settings.state_url else None)
    return settings


def _configure_logging(level: str, replica: str | None = None) -> None:
    root = logging.getLogger("opsentinel")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        who = f" replica={replica}" if replica else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{who} %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
        root.addHandler(handler)
    root.setLevel(level.upper())
    # azure-core logs full request details at INFO; keep it quiet unless debugging.
    logging.getLogger("azure").setLevel(logging.WARNING if level != "debug" else logging.INFO)


@app.command()
def check(
    config: ConfigOpt = None,
    base_url: BaseUrlOpt = None,
    token_file: TokenFileOpt = None,
    streams: StreamsOpt = None,
    sink: SinkOpt = None,
    db: DbOpt = None,
    dce: DceOpt = None,
    dcr_id: DcrIdOpt = None,
    stream: DcrStreamOpt = None,
    history_stream: HistoryStreamOpt = None,
    state: StateOpt = None,
    since: SinceOpt = None,
    lookback: LookbackOpt = None,
    allow_custom_host: CustomHostOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Validate settings and the token; print account, features, region, the streams that will run,
    and what a stream's first run will read and send where."""
    from opsentinel.commands import run_check

    settings = _settings(
        config,
        base_url=base_url,
        token_file=token_file,
        streams=streams,
        sink=sink,
        db=db,
        dce=dce,
        dcr_id=dcr_id,
        stream=stream,
        history_stream=history_stream,
        state=state,
        since=since,
        lookback=lookback,
        allow_custom_host=allow_custom_host,
        log_level=log_level,
    )
    run_check(settings)


@app.command()
def run(
    once: Annotated[
        bool, typer.Option("--once", help="Drain every stream until has_more is false, then exit")
    ] = False,
    config: ConfigOpt = None,
    base_url: BaseUrlOpt = None,
    token_file: TokenFileOpt = None,
    streams: StreamsOpt = None,
    since: SinceOpt = None,
    lookback: LookbackOpt = None,
    sink: SinkOpt = None,
    db: DbOpt = None,
    jsonl_path: JsonlOpt = None,
    dce: DceOpt = None,
    dcr_id: DcrIdOpt = None,
    stream: DcrStreamOpt = None,
    history_stream: HistoryStreamOpt = None,
    state: StateOpt = None,
    poll_interval: PollOpt = None,
    health_interval: HealthOpt = None,
    backfill_workers: BackfillOpt = None,
    late_window: LateWindowOpt = None,
    replica_id: ReplicaOpt = None,
    allow_custom_host: CustomHostOpt = None,
    log_level: LogLevelOpt = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar [default: on when stderr is a terminal]"),
    ] = None,
) -> None:
    """Poll every enabled stream forever (or drain once with --once), delivering to the sink.

    SIGINT/SIGTERM finish the page in flight, save checkpoints and exit 0.
    """
    from opsentinel.commands import run_connector

    settings = _settings(
        config,
        base_url=base_url,
        token_file=token_file,
        streams=streams,
        since=since,
        lookback=lookback,
        sink=sink,
        db=db,
        jsonl_path=jsonl_path,
        dce=dce,
        dcr_id=dcr_id,
        stream=stream,
        history_stream=history_stream,
        state=state,
        poll_interval=poll_interval,
        health_interval=health_interval,
        backfill_workers=backfill_workers,
        late_window=late_window,
        replica_id=replica_id,
        allow_custom_host=allow_custom_host,
        log_level=log_level,
    )
    show_progress = sys.stderr.isatty() if progress is None else progress
    code = run_connector(settings, once=once, progress=show_progress)
    raise typer.Exit(code)


@app.command()
def status(
    output_format: Annotated[str, typer.Option("--format", help="table | json")] = "table",
    config: ConfigOpt = None,
    sink: SinkOpt = None,
    db: DbOpt = None,
    state: StateOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Per stream: checkpoint age, newest event time, rows stored, last error."""
    from opsentinel.statusview import print_status

    if output_format not in ("table", "json"):
        raise UserError(f"unknown --format {output_format!r} (choose table or json)")
    settings = _settings(config, sink=sink, db=db, state=state, log_level=log_level)
    print_status(settings, output_format)


@app.command("resend-dead-letters")
def resend_dead_letters(
    config: ConfigOpt = None,
    sink: SinkOpt = None,
    dce: DceOpt = None,
    dcr_id: DcrIdOpt = None,
    stream: DcrStreamOpt = None,
    history_stream: HistoryStreamOpt = None,
    state: StateOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Send the records Azure refused (dead-letter.jsonl in --state) again, once the cause is fixed.

    Each record accepted leaves the file; one that Azure still refuses stays. Exactly once, even if
    interrupted: a second run skips what the first had sent.
    """
    from opsentinel.commands import run_resend

    if sink not in (None, "sentinel"):
        raise UserError(f"resend-dead-letters sends to Sentinel; --sink {sink} has no dead letters")
    settings = _settings(
        config,
        sink="sentinel",
        dce=dce,
        dcr_id=dcr_id,
        stream=stream,
        history_stream=history_stream,
        state=state,
        log_level=log_level,
    )
    raise typer.Exit(run_resend(settings))


@app.command("break-lease")
def break_lease(
    account: Annotated[str, typer.Option("--account", help="The account's uuid (as `status` shows it)")],
    stream: Annotated[str, typer.Option("--stream", help="auditevents, signinattempts or itemusages")],
    config: ConfigOpt = None,
    state: StateOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Free a stuck (account, stream) of a Blob state now: its holder loses it and stops sending for
    it; any replica can take it at its next balance."""
    from opsentinel.checkpoints.blobaccess import BlobState
    from opsentinel.checkpoints.leases import Leases

    settings = _settings(config, state=state, log_level=log_level)
    if settings.state_url is None:
        raise UserError("break-lease needs --state with a Blob container URL (leases exist only there)")
    blob = BlobState.open(settings.state_url)
    try:
        owner = Leases(blob, settings.replica_id).break_lease(account, stream)
    finally:
        blob.close()
    print(f"broke the lease of {stream} (account {account}); its holder was {owner or 'unknown'}")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL to run against the DuckDB store (read-only)")],
    output_format: Annotated[str, typer.Option("--format", help="table | json | jsonl | csv")] = "table",
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run read-only SQL against the DuckDB store.

    Example: op-sentinel query "SELECT log_source, count(*) FROM OnePasswordEventLogs_CL GROUP BY 1"
    """
    from opsentinel.formats import FORMATS, write_result
    from opsentinel.store_read import run_query

    if output_format not in FORMATS:
        raise UserError(f"unknown --format {output_format!r} (choose {', '.join(FORMATS)})")
    settings = _settings(config, db=db, log_level=log_level)
    columns, rows = run_query(settings.db, sql)
    write_result(columns, rows, output_format, sys.stdout)


@app.command()
def demo(
    db: Annotated[Path, typer.Option("--db", help="DuckDB file for the demo; replaced on every demo")] = Path(
        "op-sentinel-demo.duckdb"
    ),
    events: Annotated[int, typer.Option("--events", help="Simulated events per stream")] = 2000,
    days: Annotated[float, typer.Option("--days", help="Days of simulated history")] = 7.0,
) -> None:
    """Start the simulator, run `run --once` into a demo DuckDB file, and print a summary."""
    from opsentinel.demo import run_demo

    run_demo(db, events=events, days=days)


def _register_subcommands() -> None:
    try:
        from opsentinel.simulator.cli import simulate_command
    except ImportError:  # pragma: no cover - only while the simulator is being built
        pass
    else:
        app.command("simulate")(simulate_command)
    try:
        from opsentinel.azure.cli import azure_app
    except ImportError:  # pragma: no cover
        pass
    else:
        app.add_typer(
            azure_app,
            name="azure",
            help="The Azure side: ARM templates for the Sentinel tables, DCE and DCR, or (--function-app) "
            "the whole connector on Azure Functions.",
        )


_register_subcommands()


@app.command("version", hidden=True)
def version() -> None:
    """Print the version."""
    print(__version__)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning every expected error into one line on stderr."""
    tune_process()
    try:
        # The name users type, whether started as `op-sentinel` or `python -m opsentinel.cli`.
        result = app(args=argv, standalone_mode=False, prog_name="op-sentinel")
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors: bad flag, missing argument, bad value
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            try:
                print(ctx.get_help(), flush=True)
            except BrokenPipeError:  # `op-sentinel | head`: the reader has gone, nothing to report
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {exc.format_message()}{where}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OpSentinelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not a user error: one line; the traceback only at debug level
        logging.getLogger("opsentinel").debug("internal error", exc_info=True)
        print(f"error: internal error ({type(exc).__name__}); rerun with --log-level debug", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
