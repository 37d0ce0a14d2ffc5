"""`op-sentinel azure template --function-app`: the app settings name real op-sentinel settings, the
host runs on identity (no keys), the token comes from Key Vault, and every role the app needs is there."""

from __future__ import annotations

import re
from typing import Any

import pytest
from tests.unit.azure.arm_expressions import Context

from opsentinel.azure import build_function_app_template, function_app_settings
from opsentinel.config import SPECS, TOKEN_ENV
from opsentinel.functions import HOST_SETTINGS
from opsentinel.timefmt import parse_duration

# Settings the Functions app itself reads (the timer's schedule, the queue fan-out), not config.SPECS.
APP_HOST_SETTINGS = set(HOST_SETTINGS)
# Settings of the Functions host, Application Insights and azure-identity (not op-sentinel's).
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AZURE_CLIENT_ID",
}
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}


def resources(template: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [r for r in template["resources"] if r["type"] == type_]


def site(template: dict[str, Any]) -> dict[str, Any]:
    (found,) = resources(template, "Microsoft.Web/sites")
    return found


def app_settings(template: dict[str, Any]) -> dict[str, str]:
    pairs = site(template)["properties"]["siteConfig"]["appSettings"]
    return {p["name"]: p["value"] for p in pairs}


def test_every_op_sentinel_app_setting_is_a_real_setting_name() -> None:
    known = {spec.env for spec in SPECS if spec.env} | {TOKEN_ENV} | APP_HOST_SETTINGS
    names = set(function_app_settings())
    ours = {n for n in names if n.startswith("OP_SENTINEL_")}
    assert ours <= known, ours - known
    assert names - ours == PLATFORM_SETTINGS
    # The connector in Functions needs at least these to reach Sentinel with the token from Key Vault.
    assert ours >= {
        "OP_SENTINEL_SINK",
        "OP_SENTINEL_DCE",
        "OP_SENTINEL_DCR_ID",
        "OP_SENTINEL_STREAM",
        "OP_SENTINEL_HISTORY_STREAM",
        "OP_SENTINEL_STATE",
        "OP_SENTINEL_TOKEN",
        "OP_SENTINEL_BASE_URL",
        "OP_SENTINEL_SCHEDULE",
        "OP_SENTINEL_FANOUT",
        "OP_SENTINEL_LATE_WINDOW",
    }


def test_the_site_carries_exactly_the_listed_settings() -> None:
    assert app_settings(build_function_app_template()) == function_app_settings()


def deployed_settings(**parameters: Any) -> dict[str, Any]:
    """The app settings as a deployment would set them (reference() answered by fake resources)."""
    template = build_function_app_template()
    ctx = Context(template, {"workspaceName": "sentinel-ws", **parameters})
    ctx.references.update(
        {
            ctx.variable("identityId"): {"clientId": "c1d2", "principalId": "p1d2"},
            ctx.variable("dataCollectionEndpointId"): {
                "logsIngestion": {
                    "endpoint": "https://op-sentinel-dce-ab12.westeurope-1.ingest.monitor.azure.com"
                }
            },
            ctx.variable("dataCollectionRuleId"): {"immutableId": "dcr-" + "0" * 32},
            ctx.variable("applicationInsightsId"): {"ConnectionString": "InstrumentationKey=x"},
        }
    )
    return {k: ctx.value(v) for k, v in app_settings(template).items()}


def test_settings_as_deployed_are_values_op_sentinel_accepts() -> None:
    settings = deployed_settings(storageAccountName="opsentstate01", stateContainerName="checkpoints")
    assert settings["OP_SENTINEL_SINK"] == "sentinel"
    assert settings["OP_SENTINEL_STREAM"] == "Custom-OnePasswordEventLogs_CL"
    # A first run's history goes to the stream this template's DCR declares for it.
    assert settings["OP_SENTINEL_HISTORY_STREAM"] == "Custom-OnePasswordEventLogsHistory_CL"
    (rule,) = resources(build_function_app_template(), "Microsoft.Insights/dataCollectionRules")
    assert settings["OP_SENTINEL_HISTORY_STREAM"] in rule["properties"]["streamDeclarations"]
    assert settings["OP_SENTINEL_DCR_ID"] == "dcr-" + "0" * 32
    assert settings["OP_SENTINEL_DCE"].startswith("https://")
    # interface.md "Blob state": https://ACCOUNT.blob.core.windows.net/CONTAINER
    assert settings["OP_SENTINEL_STATE"] == "https://opsentstate01.blob.core.windows.net/checkpoints"
    assert settings["OP_SENTINEL_BASE_URL"] == ""  # empty: derived from the token
    assert parse_duration(settings["OP_SENTINEL_LATE_WINDOW"]).total_seconds() == 24 * 3600
    schedule = settings["OP_SENTINEL_SCHEDULE"]
    assert schedule == "0 */1 * * * *" and len(schedule.split()) == 6  # NCRONTAB: seconds first
    assert settings["OP_SENTINEL_FANOUT"] == "0"  # one timer works every account
    assert deployed_settings(queueFanOut=True)["OP_SENTINEL_FANOUT"] == "1"
    assert settings["AZURE_CLIENT_ID"] == "c1d2" == settings["AzureWebJobsStorage__clientId"]
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=c1d2;Authorization=AAD"


@pytest.mark.parametrize(
    ("parameters", "uri"),
    [
        ({"keyVaultName": "opsent-kv1"}, "https://opsent-kv1.vault.azure.net/secrets/op-sentinel-token"),
        (
            {"existingTokenSecretUri": "https://central.vault.azure.net/secrets/op-token"},
            "https://central.vault.azure.net/secrets/op-token",
        ),
    ],
)
def test_the_token_is_a_key_vault_reference_never_a_value(parameters: dict[str, Any], uri: str) -> None:
    settings = deployed_settings(onePasswordToken="ops_must_not_appear", **parameters)
    assert settings["OP_SENTINEL_TOKEN"] == f"@Microsoft.KeyVault(SecretUri={uri})"
    assert "ops_must_not_appear" not in repr(settings)
    template = build_function_app_template()
    assert template["parameters"]["onePasswordToken"]["type"] == "securestring"
    assert template["parameters"]["onePasswordToken"]["defaultValue"] == ""
    assert "onePasswordToken" not in repr(template["outputs"])
    (secret,) = resources(template, "Microsoft.KeyVault/vaults/secrets")
    ctx = Context(template, {"workspaceName": "ws", "onePasswordToken": "t", **parameters})
    # Written only into a vault the template made, and only when given: a redeploy without it keeps it.
    assert ctx.value(secret["condition"]) is ("existingTokenSecretUri" not in parameters)
    assert Context(template, {"workspaceName": "ws"}).value(secret["condition"]) is False
    assert (
        Context(template, {"workspaceName": "ws", "onePasswordToken": "t"}).value(secret["condition"]) is True
    )


def test_the_host_storage_is_reached_by_identity_and_the_account_refuses_shared_keys() -> None:
    template = build_function_app_template()
    settings = function_app_settings()
    assert "AzureWebJobsStorage" not in settings  # no connection string
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    (storage,) = resources(template, "Microsoft.Storage/storageAccounts")
    assert storage["properties"]["allowSharedKeyAccess"] is False
    assert storage["properties"]["allowBlobPublicAccess"] is False
    storage_auth = site(template)["properties"]["functionAppConfig"]["deployment"]["storage"][
        "authentication"
    ]
    assert storage_auth == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "[variables('identityId')]",
    }
    assert site(template)["properties"]["keyVaultReferenceIdentity"] == "[variables('identityId')]"
    (vault,) = resources(template, "Microsoft.KeyVault/vaults")
    assert vault["properties"]["enableRbacAuthorization"] is True


def test_flex_consumption_python_app() -> None:
    template = build_function_app_template()
    (plan,) = resources(template, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True  # Linux
    app = site(template)
    assert app["kind"] == "functionapp,linux"
    assert app["properties"]["functionAppConfig"]["runtime"]["name"] == "python"
    assert app["identity"]["type"] == "UserAssigned"
    # Flex Consumption refuses these settings; the runtime is in functionAppConfig.
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE"} & set(
        function_app_settings()
    )


def test_the_identity_gets_every_role_the_app_needs_before_the_app_starts() -> None:
    template = build_function_app_template()
    ctx = Context(template, {"workspaceName": "ws"})
    granted = set()
    for role in resources(template, "Microsoft.Authorization/roleAssignments"):
        if "identityId" not in role["name"]:
            continue
        definition = ctx.value(role["properties"]["roleDefinitionId"]).rsplit("/", 1)[1]
        scope = ctx.value(role["scope"]).split("/")[1]
        granted.add((ROLES[definition], scope))
        assert ctx.value(role["name"]) in " ".join(ctx.value(d) for d in site(template)["dependsOn"])
    assert granted == {
        ("Storage Blob Data Owner", "storageAccounts"),
        ("Storage Queue Data Contributor", "storageAccounts"),
        ("Key Vault Secrets User", "vaults"),
        ("Monitoring Metrics Publisher", "dataCollectionRules"),
        ("Monitoring Metrics Publisher", "components"),
    }


def test_outputs_name_what_the_next_steps_need() -> None:
    outputs = build_function_app_template()["outputs"]
    assert {
        "logsIngestionEndpoint",
        "dataCollectionRuleImmutableId",
        "dataCollectionRuleId",
        "streamName",
        "historyStreamName",
        "functionAppName",
        "identityPrincipalId",
        "identityClientId",
        "stateUrl",
        "keyVaultName",
        "tokenSecretUri",
        "storageAccountName",
    } <= set(outputs)
    for output in outputs.values():
        assert output["type"] == "string"
        assert re.fullmatch(r"\[.*\]", output["value"])
