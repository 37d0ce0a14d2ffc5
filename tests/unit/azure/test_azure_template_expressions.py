"""Every ARM expression in both templates: well formed, known functions, declared names, right places.

And what the expressions compute in a simulated deployment: dependsOn names real resources of the
template, the DCR lands in the workspace's region, role assignment names are the same on every deploy.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.azure.arm_expressions import (
    DEPLOYMENT_TIME,
    KNOWN_FUNCTIONS,
    Call,
    Context,
    DeploymentTimeValue,
    Str,
    arm_guid,
    calls,
    expression_of,
    parse,
    resource_id,
    strings,
)

from opsentinel.azure import build_function_app_template, build_template

BUILDERS = {"plain": build_template, "function-app": build_function_app_template}
ROLE = "Microsoft.Authorization/roleAssignments"


@pytest.fixture(params=sorted(BUILDERS))
def template(request: pytest.FixtureRequest) -> dict[str, Any]:
    return BUILDERS[request.param]()


def expressions(node: Any, path: str = "$") -> list[tuple[str, Call | Any]]:
    out = []
    for where, text in strings(node, path):
        inner = expression_of(text)
        if inner is not None:
            out.append((where, parse(inner)))
    return out


def test_every_expression_parses_and_calls_only_template_functions(template: dict[str, Any]) -> None:
    found = expressions(template)
    assert len(found) > 20
    for where, tree in found:
        for call in calls(tree):
            assert call.name.lower() in KNOWN_FUNCTIONS, f"{where}: unknown function {call.name}()"


def test_every_parameter_and_variable_named_is_declared_and_every_one_declared_is_used(
    template: dict[str, Any],
) -> None:
    used: dict[str, set[str]] = {"parameters": set(), "variables": set()}
    for where, tree in expressions(template):
        for call in calls(tree):
            kind = call.name.lower()
            if kind in used:
                assert len(call.args) == 1 and isinstance(call.args[0], Str), (
                    f"{where}: {kind}() needs a literal"
                )
                name = call.args[0].value
                assert name in template[kind], f"{where}: {kind}('{name}') is not declared"
                used[kind].add(name)
    assert used["parameters"] == set(template["parameters"])
    assert used["variables"] == set(template["variables"])


def _functions_in(node: Any) -> set[str]:
    return {c.name.lower() for _, tree in expressions(node) for c in calls(tree)}


def test_deployment_time_functions_only_where_arm_allows_them(template: dict[str, Any]) -> None:
    # reference()/list*() are resolved while deploying: not in parameters, variables, names, types,
    # conditions, scopes or dependsOn (ARM refuses the template otherwise).
    assert not _functions_in(template["parameters"]) & (DEPLOYMENT_TIME | {"variables"})
    assert not _functions_in(template["variables"]) & DEPLOYMENT_TIME
    for resource in template["resources"]:
        for key in ("name", "type", "apiVersion", "condition", "scope", "dependsOn"):
            assert not _functions_in(resource.get(key, "")) & DEPLOYMENT_TIME, (resource["type"], key)
    # Nothing that changes between two deployments of the same parameters.
    assert not _functions_in(template) & {"newguid", "utcnow", "deployment"}


def context(template: dict[str, Any], **parameters: Any) -> Context:
    return Context(template, {"workspaceName": "sentinel-ws", **parameters})


SCENARIOS: list[dict[str, Any]] = [
    {},
    {
        "existingDataCollectionEndpointId": "/subscriptions/s/resourceGroups/r/providers/"
        "Microsoft.Insights/dataCollectionEndpoints/shared"
    },
    {"deployTable": False, "location": "northeurope"},
]
APP_SCENARIOS: list[dict[str, Any]] = [
    {"onePasswordToken": "ops_test", "secretsOfficerPrincipalId": "11111111-1111-1111-1111-111111111111"},
    {"existingTokenSecretUri": "https://central-kv.vault.azure.net/secrets/op-token"},
]


@pytest.mark.parametrize("scenario", SCENARIOS + APP_SCENARIOS)
def test_every_depends_on_names_a_resource_of_the_template(scenario: dict[str, Any]) -> None:
    for template in (build_template(), build_function_app_template()):
        if set(scenario) - set(template["parameters"]):
            continue
        ctx = context(template, **scenario)
        declared = {resource_id(r, ctx).lower() for r in template["resources"]}
        for resource in template["resources"]:
            for entry in resource.get("dependsOn", []):
                assert ctx.value(entry).lower() in declared, (resource["type"], entry)


def test_the_dcr_and_dce_default_to_the_workspaces_region_not_the_resource_groups() -> None:
    for template in (build_template(), build_function_app_template()):
        ctx = context(template)
        workspace = ctx.variable("workspaceResourceId")
        ctx.references[workspace] = {"location": "westeurope"}  # the resource group is elsewhere
        for type_ in ("Microsoft.Insights/dataCollectionRules", "Microsoft.Insights/dataCollectionEndpoints"):
            (resource,) = [r for r in template["resources"] if r["type"] == type_]
            assert ctx.value(resource["location"]) == "westeurope"
            assert context(template, location="northeurope").value(resource["location"]) == "northeurope"


def test_the_function_app_follows_the_dcr_unless_told_otherwise() -> None:
    template = build_function_app_template()
    (site,) = [r for r in template["resources"] if r["type"] == "Microsoft.Web/sites"]
    assert context(template, location="swedencentral").value(site["location"]) == "swedencentral"
    assert (
        context(template, location="swedencentral", functionAppLocation="westeurope").value(site["location"])
        == "westeurope"
    )


def role_names(template: dict[str, Any], ctx: Context) -> dict[str, str]:
    """Role assignment name by (scope, role definition, principal) as the deployment would see them."""
    out = {}
    for resource in template["resources"]:
        if resource["type"] == ROLE:
            key = f"{ctx.value(resource['scope'])} {ctx.value(resource['properties']['roleDefinitionId'])}"
            out[key] = ctx.value(resource["name"])
    return out


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_role_assignment_names_are_the_same_on_every_deployment(kind: str) -> None:
    # A redeploy PUTs the assignment it made before (same name), instead of a second one that Azure
    # would refuse with RoleAssignmentExists. Two builds, two contexts: nothing but the inputs counts.
    params = {"principalId": "22222222-2222-2222-2222-222222222222"} if kind == "plain" else {}
    first_template, second_template = BUILDERS[kind](), BUILDERS[kind]()
    first = role_names(first_template, context(first_template, **params))
    second = role_names(second_template, context(second_template, **params))
    assert first == second
    assert len(first) == (1 if kind == "plain" else 6)
    assert len(set(first.values())) == len(first)  # one name per (scope, role, principal)
    for name in first.values():
        assert len(name) == 36 and name.count("-") == 4


def test_a_role_name_is_guid_of_scope_principal_and_role() -> None:
    template = build_template()
    principal = "33333333-3333-3333-3333-333333333333"
    ctx = context(template, principalId=principal)
    (role,) = [r for r in template["resources"] if r["type"] == ROLE]
    assert ctx.value(role["name"]) == arm_guid(
        ctx.variable("dataCollectionRuleId"), principal, ctx.variable("monitoringMetricsPublisher")
    )
    # Another identity gets another assignment (no RoleAssignmentUpdateNotPermitted on a new principal).
    other = context(template, principalId="44444444-4444-4444-4444-444444444444")
    assert other.value(role["name"]) != ctx.value(role["name"])


def test_role_names_never_depend_on_deployment_time_values() -> None:
    template = build_function_app_template()
    ctx = context(template)  # no reference() answers: a name that needed one would raise
    identity_roles = 0
    for resource in template["resources"]:
        if resource["type"] != ROLE:
            continue
        ctx.value(resource["name"])
        if "reference(" in resource["properties"]["principalId"]:
            identity_roles += 1
            assert resource["properties"]["principalType"] == "ServicePrincipal"
            with pytest.raises(DeploymentTimeValue):  # the identity's principal id exists only then
                ctx.value(resource["properties"]["principalId"])
    assert identity_roles == 5
