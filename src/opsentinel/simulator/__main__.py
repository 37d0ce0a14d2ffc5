"""`python -m opsentinel.simulator [options]`: the `simulate` command on its own."""

from __future__ import annotations

import sys

import typer

from opsentinel.errors import UserError
from opsentinel.simulator.cli import simulate_command


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(simulate_command)
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except typer.Abort:
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
