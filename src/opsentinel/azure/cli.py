"""`op-sentinel azure ...`: commands for the Azure side of the Sentinel sink.

The lead's CLI mounts this with `app.add_typer(azure_app, name="azure")`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from opsentinel.azure.template import build_template
from opsentinel.errors import ConfigError

__all__ = ["azure_app", "template_json"]

azure_app = typer.Typer(
    name="azure",
    help="The Azure side of the Sentinel sink (table, data collection endpoint and rule).",
    no_args_is_help=True,
    add_completion=False,
)


@azure_app.callback()
def azure() -> None:
    """The Azure side of the Sentinel sink (table, data collection endpoint and rule)."""


def template_json() -> str:
    """The ARM template as JSON text (indent 2, trailing newline)."""
    return json.dumps(build_template(), indent=2) + "\n"


@azure_app.command("template")
def template(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the template to FILE instead of standard output."),
    ] = None,
) -> None:
    """Print the ARM template: table OnePasswordEventLogs_CL, DCE, DCR with transform, optional role.

    Deploy it with `az deployment group create --resource-group RG --template-file FILE
    --parameters workspaceName=WS`; its outputs are the values for --dce, --dcr-id and --stream.
    """
    text = template_json()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the template to {output}: {exc.strerror or exc}") from exc
    typer.echo(f"wrote {output}", err=True)
