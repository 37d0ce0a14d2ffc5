"""The ARM template for the Sentinel side: table, data collection endpoint, rule and role.

Built from `opsentinel.schema`, so the table and the stream declaration cannot drift from what the
connector sends. Compared with Microsoft's 1Password solution (`1Password_tables.json`,
`1Password_DCR.json`, package 3.0.6):

- the table `OnePasswordEventLogs_CL` is the same 33 columns, same types;
- the stream `Custom-OnePasswordEventLogs_CL` declares the official 28 input columns plus
  `log_source` (string), which op-sentinel sets to the stream each event was read from;
- the transform is the official one, except that `log_source` is taken from the record when present
  and only otherwise guessed the official way (the guess labels audit events carrying `aux_id` as
  itemusages), and `TimeGenerated` may be the event time (parameter `timeGenerated` = "event");
- outputs are exactly what `op-sentinel --dce --dcr-id --stream` need.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from opsentinel import __version__
from opsentinel.schema import COLUMNS, DCR_INPUT_COLUMNS, DCR_STREAM_NAME, TABLE_NAME

__all__ = [
    "MONITORING_METRICS_PUBLISHER_ROLE",
    "OFFICIAL_LOG_SOURCE_GUESS",
    "build_template",
    "stream_columns",
    "table_columns",
    "transform_kql",
]

DEPLOYMENT_SCHEMA: Final = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
MONITORING_METRICS_PUBLISHER_ROLE: Final = "3913510d-42f4-4e42-8a64-420c390055eb"
_DCR_API: Final = "2023-03-11"
_TABLE_API: Final = "2022-10-01"
_ROLE_API: Final = "2022-04-01"
_DESTINATION: Final = "workspace"
_NEW_DCE_ID: Final = (
    "resourceId('Microsoft.Insights/dataCollectionEndpoints', parameters('dataCollectionEndpointName'))"
)

# The official transform's field-presence guess (1Password_DCR.json, verbatim).
OFFICIAL_LOG_SOURCE_GUESS: Final = (
    "case(isnotempty(used_version) or isnotempty(aux_id), 'itemusages', isnotempty(country), "
    "'signinattempts', isempty(used_version) and isempty(aux_id) and isempty(country), 'auditevents', "
    "'unknown')"
)

# Table columns the transform computes; every other column (but SourceSystem) passes through by name.
_COMPUTED: Final[dict[str, str]] = {
    "uuid_s": "uuid",
    "action_type": "type",
    "user_type": "tostring(coalesce(target_user.user_type, user.user_type))",
    "user_account_uuid": "tostring(coalesce(target_user.user_account_uuid, user.user_account_uuid))",
    "log_source": f"iff(isnotempty(log_source), log_source, {OFFICIAL_LOG_SOURCE_GUESS})",
}
_TIME_GENERATED: Final[dict[str, str]] = {
    "ingestion": "now()",  # as the official transform: when Azure received the record
    "event": "coalesce(timestamp, now())",  # the event's own time
}

TimeGenerated = Literal["ingestion", "event"]


def transform_kql(time_generated: TimeGenerated = "ingestion") -> str:
    """The DCR's transformKql: the official projection with `log_source` kept from the record."""
    parts = []
    for column in COLUMNS:
        if column.name == "SourceSystem":  # filled by Azure, not by the transform
            continue
        if column.name == "TimeGenerated":
            parts.append(f"TimeGenerated = {_TIME_GENERATED[time_generated]}")
        elif column.name in _COMPUTED:
            parts.append(f"{column.name} = {_COMPUTED[column.name]}")
        else:
            parts.append(column.name)
    return "source | project " + ", ".join(parts)


def table_columns() -> list[dict[str, str]]:
    """The 33 columns of `OnePasswordEventLogs_CL` as ARM table schema columns."""
    return [{"name": c.name, "type": c.kind} for c in COLUMNS]


def stream_columns() -> list[dict[str, str]]:
    """The stream declaration: the official 28 input columns, then `log_source`."""
    return [{"name": c.name, "type": c.kind} for c in DCR_INPUT_COLUMNS] + [
        {"name": "log_source", "type": "string"}
    ]


def _parameters() -> dict[str, Any]:
    def string(description: str, **extra: Any) -> dict[str, Any]:
        return {"type": "string", **extra, "metadata": {"description": description}}

    return {
        "workspaceName": string(
            "Name of the Log Analytics workspace that has Microsoft Sentinel; it must be in the resource "
            "group you deploy to. The table OnePasswordEventLogs_CL is created (or updated) in it."
        ),
        "location": string(
            "Region of the data collection endpoint and rule: the workspace's region.",
            defaultValue="[resourceGroup().location]",
        ),
        "dataCollectionEndpointName": string(
            "Name of the data collection endpoint to create (unused with existingDataCollectionEndpointId).",
            defaultValue="op-sentinel-dce",
        ),
        "existingDataCollectionEndpointId": string(
            "Resource id of an existing data collection endpoint to use instead of creating one "
            "(for example the workspace's default DCE, or one behind a private link scope).",
            defaultValue="",
        ),
        "dataCollectionRuleName": string("Name of the data collection rule.", defaultValue="op-sentinel-dcr"),
        "principalId": string(
            "Object (principal) id of the identity op-sentinel runs as (managed identity or service "
            "principal); when given, it is granted Monitoring Metrics Publisher on the rule.",
            defaultValue="",
        ),
        "principalType": string(
            "Type of principalId.",
            defaultValue="ServicePrincipal",
            allowedValues=["ServicePrincipal", "User", "Group"],
        ),
        "timeGenerated": string(
            "TimeGenerated of each row: 'ingestion' (when Azure received it, as Microsoft's 1Password "
            "connector does) or 'event' (the event's timestamp).",
            defaultValue="ingestion",
            allowedValues=["ingestion", "event"],
        ),
    }


def _variables() -> dict[str, Any]:
    return {
        "tableName": TABLE_NAME,
        "streamName": DCR_STREAM_NAME,
        "workspaceResourceId": (
            "[resourceId('Microsoft.OperationalInsights/workspaces', parameters('workspaceName'))]"
        ),
        "createDataCollectionEndpoint": "[empty(parameters('existingDataCollectionEndpointId'))]",
        "dataCollectionEndpointId": (
            "[if(empty(parameters('existingDataCollectionEndpointId')), "
            f"{_NEW_DCE_ID}, "
            "parameters('existingDataCollectionEndpointId'))]"
        ),
        "dataCollectionRuleId": (
            "[resourceId('Microsoft.Insights/dataCollectionRules', parameters('dataCollectionRuleName'))]"
        ),
        "monitoringMetricsPublisher": (
            "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
            f"'{MONITORING_METRICS_PUBLISHER_ROLE}')]"
        ),
        "transformIngestionTime": transform_kql("ingestion"),
        "transformEventTime": transform_kql("event"),
    }


def _resources() -> list[dict[str, Any]]:
    table_id = (
        "[resourceId('Microsoft.OperationalInsights/workspaces/tables', parameters('workspaceName'), "
        "variables('tableName'))]"
    )
    table = {
        "type": "Microsoft.OperationalInsights/workspaces/tables",
        "apiVersion": _TABLE_API,
        "name": "[format('{0}/{1}', parameters('workspaceName'), variables('tableName'))]",
        "properties": {"schema": {"name": TABLE_NAME, "columns": table_columns()}},
    }
    endpoint = {
        "condition": "[variables('createDataCollectionEndpoint')]",
        "type": "Microsoft.Insights/dataCollectionEndpoints",
        "apiVersion": _DCR_API,
        "name": "[parameters('dataCollectionEndpointName')]",
        "location": "[parameters('location')]",
        "properties": {
            "description": "Logs Ingestion endpoint for op-sentinel (1Password events)",
            "networkAcls": {"publicNetworkAccess": "Enabled"},
        },
    }
    rule = {
        "type": "Microsoft.Insights/dataCollectionRules",
        "apiVersion": _DCR_API,
        "name": "[parameters('dataCollectionRuleName')]",
        "location": "[parameters('location')]",
        "dependsOn": [table_id, f"[{_NEW_DCE_ID}]"],
        "properties": {
            "description": "1Password Events API records from op-sentinel into OnePasswordEventLogs_CL",
            "dataCollectionEndpointId": "[variables('dataCollectionEndpointId')]",
            "streamDeclarations": {DCR_STREAM_NAME: {"columns": stream_columns()}},
            "destinations": {
                "logAnalytics": [
                    {"workspaceResourceId": "[variables('workspaceResourceId')]", "name": _DESTINATION}
                ]
            },
            "dataFlows": [
                {
                    "streams": [DCR_STREAM_NAME],
                    "destinations": [_DESTINATION],
                    "transformKql": (
                        "[if(equals(parameters('timeGenerated'), 'event'), "
                        "variables('transformEventTime'), variables('transformIngestionTime'))]"
                    ),
                    "outputStream": f"Custom-{TABLE_NAME}",
                }
            ],
        },
    }
    role = {
        "condition": "[not(empty(parameters('principalId')))]",
        "type": "Microsoft.Authorization/roleAssignments",
        "apiVersion": _ROLE_API,
        "scope": (
            "[format('Microsoft.Insights/dataCollectionRules/{0}', parameters('dataCollectionRuleName'))]"
        ),
        "name": (
            "[guid(variables('dataCollectionRuleId'), parameters('principalId'), "
            "variables('monitoringMetricsPublisher'))]"
        ),
        "dependsOn": [
            "[resourceId('Microsoft.Insights/dataCollectionRules', parameters('dataCollectionRuleName'))]"
        ],
        "properties": {
            "roleDefinitionId": "[variables('monitoringMetricsPublisher')]",
            "principalId": "[parameters('principalId')]",
            "principalType": "[parameters('principalType')]",
        },
    }
    return [table, endpoint, rule, role]


def _outputs() -> dict[str, Any]:
    endpoint = f"reference(variables('dataCollectionEndpointId'), '{_DCR_API}').logsIngestion.endpoint"
    immutable_id = f"reference(variables('dataCollectionRuleId'), '{_DCR_API}').immutableId"
    return {
        "logsIngestionEndpoint": {"type": "string", "value": f"[{endpoint}]"},
        "dataCollectionRuleImmutableId": {"type": "string", "value": f"[{immutable_id}]"},
        "streamName": {"type": "string", "value": "[variables('streamName')]"},
        "opSentinelArguments": {
            "type": "string",
            "value": (
                f"[format('--sink sentinel --dce {{0}} --dcr-id {{1}} --stream {{2}}', {endpoint}, "
                f"{immutable_id}, variables('streamName'))]"
            ),
        },
    }


def build_template() -> dict[str, Any]:
    """The ARM deployment template (resource-group scope) as a JSON-ready dict."""
    return {
        "$schema": DEPLOYMENT_SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": (
                "op-sentinel: the OnePasswordEventLogs_CL table, a data collection endpoint and a data "
                "collection rule for 1Password Events API records, and optionally the Monitoring "
                "Metrics Publisher role for the identity op-sentinel runs as."
            ),
            "generator": {"name": "op-sentinel", "version": __version__},
        },
        "parameters": _parameters(),
        "variables": _variables(),
        "resources": _resources(),
        "outputs": _outputs(),
    }
