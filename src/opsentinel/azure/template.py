"""The ARM template for the Sentinel side: table, data collection endpoint, rule and role.

Built from `opsentinel.schema`, so the table and the stream declaration cannot drift from what the
connector sends. Compared with Microsoft's 1Password solution (`1Password_tables.json`,
`1Password_DCR.json`, package 3.0.6):

- the table `OnePasswordEventLogs_CL` is the same 33 columns, same types (spelled as the tables API
  spells them: `dateTime`, which Microsoft's lowercase `datetime` is accepted as);
- the stream `Custom-OnePasswordEventLogs_CL` declares the official 28 input columns plus
  `log_source` (string), which op-sentinel sets to the stream each event was read from;
- the transform is the official one, except that `log_source` is taken from the record when present
  and only otherwise guessed the official way (the guess labels audit events carrying `aux_id` as
  itemusages), and `TimeGenerated` may be the event time (parameter `timeGenerated` = "event");
- a second table `OnePasswordEventLogsHistory_CL` (same columns) and a second stream
  `Custom-OnePasswordEventLogsHistory_CL` (same declaration, same transform) take a first run's
  history: events stamped before the unit's first run started, which the solution's rules must not
  see as new (docs/deploy-sentinel.md, "History and the analytic rules"); no rule reads that table;
- outputs are exactly what `op-sentinel --dce --dcr-id --stream --history-stream` need.

The pieces (parameters, variables, resources) are shared with the `--function-app` template in
`opsentinel.azure.app_template`, which adds the Functions host around them.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from opsentinel import __version__
from opsentinel.schema import (
    COLUMNS,
    DCR_HISTORY_STREAM_NAME,
    DCR_INPUT_COLUMNS,
    DCR_STREAM_NAME,
    HISTORY_TABLE_NAME,
    TABLE_NAME,
)

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
DCR_API: Final = "2023-03-11"
TABLE_API: Final = "2022-10-01"
WORKSPACE_API: Final = "2022-10-01"
ROLE_API: Final = "2022-04-01"
_DESTINATION: Final = "workspace"
_NEW_DCE_ID: Final = (
    "resourceId('Microsoft.Insights/dataCollectionEndpoints', parameters('dataCollectionEndpointName'))"
)
TABLE_ID: Final = (
    "[resourceId('Microsoft.OperationalInsights/workspaces/tables', parameters('workspaceName'), "
    "variables('tableName'))]"
)
HISTORY_TABLE_ID: Final = (
    "[resourceId('Microsoft.OperationalInsights/workspaces/tables', parameters('workspaceName'), "
    "variables('historyTableName'))]"
)
DCR_ID: Final = "[variables('dataCollectionRuleId')]"
DCE_DEPENDENCY: Final = f"[{_NEW_DCE_ID}]"
DCR_SCOPE: Final = (
    "[format('Microsoft.Insights/dataCollectionRules/{0}', parameters('dataCollectionRuleName'))]"
)

# The DCR must be in the workspace's region. An empty `location` means exactly that; reference() is
# not allowed in variables, so the expression is repeated where a location is needed.
LOCATION: Final = (
    "[if(empty(parameters('location')), "
    f"reference(variables('workspaceResourceId'), '{WORKSPACE_API}', 'Full').location, "
    "parameters('location'))]"
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
# The tables API's spelling of the column types (Microsoft's published schema enumerates `dateTime`).
_TABLE_KIND: Final[dict[str, str]] = {"datetime": "dateTime"}

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
    return [{"name": c.name, "type": _TABLE_KIND.get(c.kind, c.kind)} for c in COLUMNS]


def stream_columns() -> list[dict[str, str]]:
    """The stream declaration: the official 28 input columns, then `log_source`."""
    return [{"name": c.name, "type": c.kind} for c in DCR_INPUT_COLUMNS] + [
        {"name": "log_source", "type": "string"}
    ]


def param(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    """One ARM parameter declaration."""
    return {"type": kind, **extra, "metadata": {"description": description}}


def role_definition(role_guid: str) -> str:
    """The built-in role's definition id, as an ARM expression (same id in every subscription)."""
    return f"[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '{role_guid}')]"


def sentinel_parameters() -> dict[str, Any]:
    """Parameters of the table, the DCE and the DCR (shared by both templates)."""
    return {
        "workspaceName": param(
            "string",
            "Name of the Log Analytics workspace that has Microsoft Sentinel; it must be in the resource "
            "group you deploy to. The tables OnePasswordEventLogs_CL and OnePasswordEventLogsHistory_CL "
            "are created (or updated) in it.",
        ),
        "location": param(
            "string",
            "Region of the data collection endpoint and rule. Empty (the default): the workspace's "
            "region, where a DCR sending to the workspace must be.",
            defaultValue="",
        ),
        "dataCollectionEndpointName": param(
            "string",
            "Name of the data collection endpoint to create (unused with existingDataCollectionEndpointId).",
            defaultValue="op-sentinel-dce",
        ),
        "existingDataCollectionEndpointId": param(
            "string",
            "Resource id of an existing data collection endpoint to use instead of creating one "
            "(for example the workspace's default DCE, or one behind a private link scope).",
            defaultValue="",
        ),
        "dataCollectionRuleName": param(
            "string", "Name of the data collection rule.", defaultValue="op-sentinel-dcr"
        ),
        "timeGenerated": param(
            "string",
            "TimeGenerated of each row: 'ingestion' (when Azure received it, as Microsoft's 1Password "
            "connector does) or 'event' (the event's timestamp).",
            defaultValue="ingestion",
            allowedValues=["ingestion", "event"],
        ),
        "deployTable": param(
            "bool",
            "Create or update the table OnePasswordEventLogs_CL. Set false when the table already exists "
            "and its retention or plan must not be touched: the template then leaves it alone.",
            defaultValue=True,
        ),
        "deployHistoryTable": param(
            "bool",
            "Create or update the table OnePasswordEventLogsHistory_CL (a first run's history; no analytic "
            "rule reads it). Set false only when it already exists and its retention must not be "
            "touched: the data collection rule cannot be deployed without it.",
            defaultValue=True,
        ),
        "tableRetentionInDays": param(
            "int",
            "Interactive retention of the table in days (4-730); -1 (the default) follows the workspace. "
            "Applied on every deployment with deployTable=true.",
            defaultValue=-1,
            minValue=-1,
            maxValue=730,
        ),
        "tableTotalRetentionInDays": param(
            "int",
            "Total retention of the table in days, long-term included (4-4383); -1 (the default) equals "
            "the interactive retention. Applied on every deployment with deployTable=true.",
            defaultValue=-1,
            minValue=-1,
            maxValue=4383,
        ),
        "historyTableRetentionInDays": param(
            "int",
            "Interactive retention of OnePasswordEventLogsHistory_CL in days (4-730); -1 (the default): "
            "as tableRetentionInDays. Applied on every deployment with deployHistoryTable=true.",
            defaultValue=-1,
            minValue=-1,
            maxValue=730,
        ),
        "historyTableTotalRetentionInDays": param(
            "int",
            "Total retention of OnePasswordEventLogsHistory_CL in days (4-4383); -1 (the default): as "
            "tableTotalRetentionInDays. Applied on every deployment with deployHistoryTable=true.",
            defaultValue=-1,
            minValue=-1,
            maxValue=4383,
        ),
    }


def sentinel_variables() -> dict[str, Any]:
    """Variables of the table, the DCE and the DCR (shared by both templates)."""
    return {
        "tableName": TABLE_NAME,
        "streamName": DCR_STREAM_NAME,
        # An expression, not a literal list: Microsoft's published schema enumerates only the
        # Microsoft-* streams for dataFlows[].streams, though the service takes Custom-* streams.
        "dataFlowStreams": [DCR_STREAM_NAME],
        "historyTableName": HISTORY_TABLE_NAME,
        "historyStreamName": DCR_HISTORY_STREAM_NAME,
        "historyFlowStreams": [DCR_HISTORY_STREAM_NAME],
        # -1: as the main table (whose -1 in turn means the workspace's default).
        "historyTableRetentionInDays": (
            "[if(equals(parameters('historyTableRetentionInDays'), -1), "
            "parameters('tableRetentionInDays'), parameters('historyTableRetentionInDays'))]"
        ),
        "historyTableTotalRetentionInDays": (
            "[if(equals(parameters('historyTableTotalRetentionInDays'), -1), "
            "parameters('tableTotalRetentionInDays'), parameters('historyTableTotalRetentionInDays'))]"
        ),
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
        "monitoringMetricsPublisher": role_definition(MONITORING_METRICS_PUBLISHER_ROLE),
        "transformIngestionTime": transform_kql("ingestion"),
        "transformEventTime": transform_kql("event"),
    }


def _table(name: str, name_variable: str, deploy: str, retention: str, total: str) -> dict[str, Any]:
    return {
        "condition": deploy,
        "type": "Microsoft.OperationalInsights/workspaces/tables",
        "apiVersion": TABLE_API,
        "name": f"[format('{{0}}/{{1}}', parameters('workspaceName'), variables('{name_variable}'))]",
        "properties": {
            # Scheduled analytics rules query only Analytics tables; the history table is Analytics
            # too, so that investigations can union it with the main table.
            "plan": "Analytics",
            "retentionInDays": retention,
            "totalRetentionInDays": total,
            "schema": {"name": name, "columns": table_columns()},
        },
    }


def _data_flow(streams_variable: str, output_stream: str) -> dict[str, Any]:
    return {
        # An expression: see `dataFlowStreams` in sentinel_variables().
        "streams": f"[variables('{streams_variable}')]",
        "destinations": [_DESTINATION],
        "transformKql": (
            "[if(equals(parameters('timeGenerated'), 'event'), "
            "variables('transformEventTime'), variables('transformIngestionTime'))]"
        ),
        "outputStream": output_stream,
    }


def sentinel_resources() -> list[dict[str, Any]]:
    """The two tables, the DCE and the DCR."""
    table = _table(
        TABLE_NAME,
        "tableName",
        "[parameters('deployTable')]",
        "[parameters('tableRetentionInDays')]",
        "[parameters('tableTotalRetentionInDays')]",
    )
    history_table = _table(
        HISTORY_TABLE_NAME,
        "historyTableName",
        "[parameters('deployHistoryTable')]",
        "[variables('historyTableRetentionInDays')]",
        "[variables('historyTableTotalRetentionInDays')]",
    )
    endpoint = {
        "condition": "[variables('createDataCollectionEndpoint')]",
        "type": "Microsoft.Insights/dataCollectionEndpoints",
        "apiVersion": DCR_API,
        "name": "[parameters('dataCollectionEndpointName')]",
        "location": LOCATION,
        "properties": {
            "description": "Logs Ingestion endpoint for op-sentinel (1Password events)",
            "networkAcls": {"publicNetworkAccess": "Enabled"},
        },
    }
    rule = {
        "type": "Microsoft.Insights/dataCollectionRules",
        "apiVersion": DCR_API,
        "name": "[parameters('dataCollectionRuleName')]",
        "location": LOCATION,
        # A dependency on a resource whose condition is false is dropped by ARM.
        "dependsOn": [TABLE_ID, HISTORY_TABLE_ID, DCE_DEPENDENCY],
        "properties": {
            "description": (
                "1Password Events API records from op-sentinel into OnePasswordEventLogs_CL, and a first "
                "run's history into OnePasswordEventLogsHistory_CL"
            ),
            "dataCollectionEndpointId": "[variables('dataCollectionEndpointId')]",
            # Same declaration, same transform: a history row is exactly the row it would have been.
            "streamDeclarations": {
                DCR_STREAM_NAME: {"columns": stream_columns()},
                DCR_HISTORY_STREAM_NAME: {"columns": stream_columns()},
            },
            "destinations": {
                "logAnalytics": [
                    {"workspaceResourceId": "[variables('workspaceResourceId')]", "name": _DESTINATION}
                ]
            },
            "dataFlows": [
                _data_flow("dataFlowStreams", f"Custom-{TABLE_NAME}"),
                _data_flow("historyFlowStreams", f"Custom-{HISTORY_TABLE_NAME}"),
            ],
        },
    }
    return [table, history_table, endpoint, rule]


def role_assignment(
    *,
    scope: str,
    scope_id: str,
    role: str,
    principal_id: str,
    principal_key: str,
    principal_type: str,
    depends_on: list[str],
    description: str,
    condition: str | None = None,
) -> dict[str, Any]:
    """A role assignment with a deterministic name: guid(scope resource id, principal, role).

    The same inputs give the same name on every deployment, so a redeploy updates the assignment it
    made before instead of creating a second one. `principal_key` is what identifies the principal
    when the name is computed: the principal id itself when it is a parameter, or the identity's
    resource id when the principal id is only known at deployment time (names cannot use reference()).
    """
    resource: dict[str, Any] = {}
    if condition is not None:
        resource["condition"] = condition
    resource.update(
        {
            "type": "Microsoft.Authorization/roleAssignments",
            "apiVersion": ROLE_API,
            "scope": scope,
            "name": f"[guid({scope_id}, {principal_key}, {role})]",
            "dependsOn": depends_on,
            "properties": {
                "roleDefinitionId": f"[{role}]",
                "principalId": principal_id,
                "principalType": principal_type,
                "description": description,
            },
        }
    )
    return resource


def sentinel_outputs() -> dict[str, Any]:
    """What `op-sentinel --dce --dcr-id --stream --history-stream` need."""
    endpoint = f"reference(variables('dataCollectionEndpointId'), '{DCR_API}').logsIngestion.endpoint"
    immutable_id = f"reference(variables('dataCollectionRuleId'), '{DCR_API}').immutableId"
    return {
        "logsIngestionEndpoint": {"type": "string", "value": f"[{endpoint}]"},
        "dataCollectionRuleImmutableId": {"type": "string", "value": f"[{immutable_id}]"},
        "dataCollectionRuleId": {"type": "string", "value": "[variables('dataCollectionRuleId')]"},
        "streamName": {"type": "string", "value": "[variables('streamName')]"},
        "historyStreamName": {"type": "string", "value": "[variables('historyStreamName')]"},
        "opSentinelArguments": {
            "type": "string",
            "value": (
                f"[format('--sink sentinel --dce {{0}} --dcr-id {{1}} --stream {{2}}', {endpoint}, "
                f"{immutable_id}, variables('streamName'))]"
            ),
        },
    }


def template_document(
    description: str,
    parameters: dict[str, Any],
    variables: dict[str, Any],
    resources: list[dict[str, Any]],
    outputs: dict[str, Any],
) -> dict[str, Any]:
    """A resource-group-scope deployment template."""
    return {
        "$schema": DEPLOYMENT_SCHEMA,
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": description,
            "generator": {"name": "op-sentinel", "version": __version__},
        },
        "parameters": parameters,
        "variables": variables,
        "resources": resources,
        "outputs": outputs,
    }


def build_template() -> dict[str, Any]:
    """The ARM deployment template (resource-group scope) as a JSON-ready dict."""
    parameters = sentinel_parameters()
    parameters["principalId"] = param(
        "string",
        "Object (principal) id of the identity op-sentinel runs as (managed identity or service "
        "principal); when given, it is granted Monitoring Metrics Publisher on the rule. Leave it empty "
        "if that grant was made another way (a second grant of the same role fails: RoleAssignmentExists).",
        defaultValue="",
    )
    parameters["principalType"] = param(
        "string",
        "Type of principalId: ServicePrincipal (also for managed identities), User or Group.",
        defaultValue="ServicePrincipal",
        allowedValues=["ServicePrincipal", "User", "Group"],
    )
    role = role_assignment(
        condition="[not(empty(parameters('principalId')))]",
        scope=DCR_SCOPE,
        scope_id="variables('dataCollectionRuleId')",
        role="variables('monitoringMetricsPublisher')",
        principal_id="[parameters('principalId')]",
        principal_key="parameters('principalId')",
        principal_type="[parameters('principalType')]",
        depends_on=[DCR_ID],
        description="op-sentinel: upload 1Password events through this data collection rule",
    )
    return template_document(
        "op-sentinel: the OnePasswordEventLogs_CL table (and OnePasswordEventLogsHistory_CL for a first "
        "run's history), a data collection endpoint and a data collection rule for 1Password Events API "
        "records, and optionally the Monitoring Metrics Publisher role for the identity op-sentinel runs "
        "as.",
        parameters,
        sentinel_variables(),
        [*sentinel_resources(), role],
        sentinel_outputs(),
    )
