"""Every template the CLI prints validates against Microsoft's published ARM schemas (vendored, offline)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from referencing.exceptions import Unresolvable
from tests.unit.azure.arm_validate import (
    documents,
    registry,
    resource_definition,
    schema_errors,
    undeclared_properties,
)
from typer.testing import CliRunner

from opsentinel.azure.cli import azure_app


def printed(*flags: str) -> dict[str, Any]:
    result = CliRunner().invoke(azure_app, ["template", *flags])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


TEMPLATES = {"plain": (), "function-app": ("--function-app",)}


@pytest.fixture(params=sorted(TEMPLATES))
def template(request: pytest.FixtureRequest) -> dict[str, Any]:
    return printed(*TEMPLATES[request.param])


def test_the_printed_template_validates_against_microsofts_schemas(template: dict[str, Any]) -> None:
    assert schema_errors(template) == []


def test_every_property_the_template_sets_is_declared_by_microsofts_schemas(template: dict[str, Any]) -> None:
    assert undeclared_properties(template) == []


def test_every_resource_type_and_api_version_has_a_vendored_schema(template: dict[str, Any]) -> None:
    for resource in template["resources"]:
        assert resource_definition(resource["type"], resource["apiVersion"])["uri"].startswith(
            "https://schema.management.azure.com/schemas/"
        )


def test_every_reference_in_the_vendored_schemas_resolves_locally() -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    resolver = registry().resolver()
    for uri, doc in documents().items():
        for ref in refs(doc):
            target = ref if ref.startswith("https://") else uri + ref
            try:
                resolver.lookup(target)
            except Unresolvable:  # pragma: no cover - the failure message is the point
                pytest.fail(f"{uri}: $ref {ref} does not resolve in the vendored schemas")


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(template: dict[str, Any]) -> None:
        node: Any = template
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _resource(template: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(r for r in template["resources"] if r["type"] == type_)


@pytest.mark.parametrize(
    ("flags", "mutate", "expected"),
    [
        # Microsoft's schema enumerates only Microsoft-* streams: why the template uses an expression.
        (
            (),
            lambda t: _set(["properties", "dataFlows", 0, "streams"], ["Custom-OnePasswordEventLogs_CL"])(
                _resource(t, "Microsoft.Insights/dataCollectionRules")
            ),
            "is not one of ['Microsoft-Event'",
        ),
        (
            ("--function-app",),
            lambda t: _set(
                ["properties", "dataFlows", 1, "streams"], ["Custom-OnePasswordEventLogsHistory_CL"]
            )(_resource(t, "Microsoft.Insights/dataCollectionRules")),
            "is not one of ['Microsoft-Event'",
        ),
        # Microsoft's own table spells the type 'datetime'; the tables schema enumerates 'dateTime'.
        (
            (),
            lambda t: _set(["properties", "schema", "columns", 1, "type"], "datetime")(
                _resource(t, "Microsoft.OperationalInsights/workspaces/tables")
            ),
            "'datetime' is not one of",
        ),
        (
            ("--function-app",),
            lambda t: _set(["properties", "functionAppConfig", "runtime", "name"], "python3")(
                _resource(t, "Microsoft.Web/sites")
            ),
            "'python3' is not one of",
        ),
        (
            ("--function-app",),
            lambda t: _set(["sku", "name"], "Standard_LRS3")(
                _resource(t, "Microsoft.Storage/storageAccounts")
            ),
            "is not one of",
        ),
        (
            ("--function-app",),
            lambda t: _set(["properties", "principalType"], "Identity")(
                _resource(t, "Microsoft.Authorization/roleAssignments")
            ),
            "'Identity' is not one of",
        ),
        (
            ("--function-app",),
            lambda t: _set(["parameters", "schedule", "type"], "text")(t),
            "'text' is not one of",
        ),
    ],
)
def test_the_schema_check_rejects_what_microsofts_schemas_reject(
    flags: tuple[str, ...], mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    template = copy.deepcopy(printed(*flags))
    mutate(template)
    assert any(expected in line for line in schema_errors(template)), schema_errors(template)


@pytest.mark.parametrize(
    ("flags", "type_", "path"),
    [
        ((), "Microsoft.Insights/dataCollectionRules", ["properties", "dataFlow"]),
        (("--function-app",), "Microsoft.Web/sites", ["properties", "siteConfig", "minTlsVersoin"]),
        (("--function-app",), "Microsoft.KeyVault/vaults", ["properties", "enableRBACAuthorisation"]),
        (("--function-app",), "Microsoft.Storage/storageAccounts", ["propertes"]),
    ],
)
def test_the_declared_property_check_catches_misspelt_properties(
    flags: tuple[str, ...], type_: str, path: list[str]
) -> None:
    template = copy.deepcopy(printed(*flags))
    _set(path, True)(_resource(template, type_))
    assert schema_errors(template) == []  # upstream lets unknown properties through ...
    (line,) = undeclared_properties(template)  # ... this check does not
    assert path[-1] in line
