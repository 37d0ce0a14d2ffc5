"""`op-sentinel azure ...`: commands for the Azure side of the Sentinel sink.

The lead's CLI mounts this with `app.add_typer(azure_app, name="azure")`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from opsentinel.azure.app_template import build_function_app_template
from opsentinel.azure.template import build_template
from opsentinel.errors import ConfigError

__all__ = ["azure_app", "template_json"]

azure_app = typer.Typer(
    name="azure",
    help="The Azure side of the Sentinel sink: ARM templates for the tables, DCE and DCR, or for the "
    "whole connector on Azure Functions (--function-app), and the Functions app's code package.",
    no_args_is_help=True,
    add_completion=False,
)


@azure_app.callback()
def azure() -> None:
    """The Azure side of the Sentinel sink: ARM templates (tables, DCE, DCR; or the Functions app), and
    the Functions app's code package."""


def template_json(*, function_app: bool = False) -> str:
    """The ARM template as JSON text (indent 2, trailing newline)."""
    template = build_function_app_template() if function_app else build_template()
    return json.dumps(template, indent=2) + "\n"


@azure_app.command("template")
def template(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the template to FILE instead of standard output."),
    ] = None,
    function_app: Annotated[
        bool,
        typer.Option(
            "--function-app",
            help="The whole connector on Azure Functions (Flex Consumption): function app, managed "
            "identity, storage, Key Vault with the token, Application Insights and every role, around "
            "the table, DCE and DCR.",
        ),
    ] = False,
) -> None:
    """Print the ARM template: tables OnePasswordEventLogs_CL and OnePasswordEventLogsHistory_CL, DCE,
    DCR with transform, optional role; with --function-app, the whole connector on Azure Functions.

    Deploy it with `az deployment group create --resource-group RG --template-file FILE
    --parameters workspaceName=WS`; its outputs are the values for --dce, --dcr-id and --stream.
    See docs/deploy-sentinel.md for both templates.
    """
    text = template_json(function_app=function_app)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the template to {output}: {exc.strerror or exc}") from exc
    typer.echo(f"wrote {output}", err=True)


@azure_app.command("package")
def package(
    out: Annotated[
        Path,
        typer.Option("--out", "--output", "-o", help="Where to write the zip.", show_default=True),
    ] = Path("op-sentinel-functions.zip"),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A TOML config with [[account]] tables to ship with the app (as op-sentinel.toml); each "
            "account's token from an app setting (token_env), never token_file.",
        ),
    ] = None,
) -> None:
    """Build the Functions app's code: the zip that `az functionapp deployment source config-zip`
    deploys to the app of `op-sentinel azure template --function-app`.

    The zip holds function_app.py, host.json, this op-sentinel's code and a requirements.txt of its
    dependencies pinned to the versions installed here; Azure's remote build installs them on Linux.
    See docs/deploy-sentinel.md ("Deploy the code").
    """
    from opsentinel.azure.package import build_package

    info = build_package(out, config=config)
    typer.echo(
        f"wrote {info.path} ({len(info.files)} files, {info.size // 1024} KiB); deploy it with: "
        f"az functionapp deployment source config-zip --resource-group RG --name APP --src {info.path} "
        "--build-remote true",
        err=True,
    )
