"""`op-sentinel azure template --function-app`: everything a running connector needs, in one template.

Around the tables, DCE and DCR of the plain template it adds:

- a user-assigned managed identity: its roles exist before the app starts (no window where the host
  or a Key Vault reference runs without access), and it survives the app being recreated;
- a storage account with shared keys disabled, for the Functions host (blobs, queues), the code
  package container Flex Consumption deploys from, and op-sentinel's checkpoint container;
- a Flex Consumption (FC1) plan and a Linux Python function app, host storage by identity;
- Application Insights (workspace-based, local auth off, telemetry sent with the identity);
- a Key Vault in RBAC mode holding the 1Password token, read by the app through a Key Vault
  reference, or a reference to an existing secret;
- every role assignment, with names that are the same on every deployment.

The app settings are listed once, in `function_app_settings()`, so a test can check that each
op-sentinel setting it names is a real one.
"""

from __future__ import annotations

from typing import Any, Final

from opsentinel.azure.template import (
    DCE_DEPENDENCY,
    DCR_API,
    DCR_ID,
    DCR_SCOPE,
    LOCATION,
    TABLE_ID,
    param,
    role_assignment,
    role_definition,
    sentinel_outputs,
    sentinel_parameters,
    sentinel_resources,
    sentinel_variables,
    template_document,
)

__all__ = [
    "DEFAULT_SCHEDULE",
    "build_function_app_template",
    "function_app_settings",
]

STORAGE_BLOB_DATA_OWNER_ROLE: Final = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR_ROLE: Final = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
KEY_VAULT_SECRETS_USER_ROLE: Final = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER_ROLE: Final = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"

IDENTITY_API: Final = "2023-01-31"
STORAGE_API: Final = "2023-05-01"
WEB_API: Final = "2024-04-01"
INSIGHTS_API: Final = "2020-02-02"
KEY_VAULT_API: Final = "2023-07-01"

DEFAULT_SCHEDULE: Final = "0 */1 * * * *"  # NCRONTAB, seconds first: every minute
DEFAULT_LATE_WINDOW: Final = "24h"
PACKAGE_CONTAINER: Final = "app-package"  # Flex Consumption deploys the code zip from this container

# Where each resource lives: an empty functionAppLocation means the DCR's location.
_APP_LOCATION: Final = (
    f"[if(empty(parameters('functionAppLocation')), {LOCATION[1:-1]}, parameters('functionAppLocation'))]"
)
_IDENTITY: Final = f"reference(variables('identityId'), '{IDENTITY_API}')"
_CLIENT_ID: Final = f"{_IDENTITY}.clientId"


def function_app_settings() -> dict[str, str]:
    """The app settings of the function app: name to value (a literal or an ARM expression).

    OP_SENTINEL_* names are op-sentinel settings (interface.md, "Settings"); the others belong to the
    Functions host, Application Insights and azure-identity.
    """
    return {
        # Functions host storage by identity (no connection string, no keys).
        "AzureWebJobsStorage__accountName": "[parameters('storageAccountName')]",
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": f"[{_CLIENT_ID}]",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (
            f"[reference(variables('applicationInsightsId'), '{INSIGHTS_API}').ConnectionString]"
        ),
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": (
            f"[format('ClientId={{0}};Authorization=AAD', {_CLIENT_ID})]"
        ),
        # DefaultAzureCredential picks the user-assigned identity by its client id.
        "AZURE_CLIENT_ID": f"[{_CLIENT_ID}]",
        "OP_SENTINEL_SINK": "sentinel",
        "OP_SENTINEL_DCE": (
            f"[reference(variables('dataCollectionEndpointId'), '{DCR_API}').logsIngestion.endpoint]"
        ),
        "OP_SENTINEL_DCR_ID": f"[reference(variables('dataCollectionRuleId'), '{DCR_API}').immutableId]",
        "OP_SENTINEL_STREAM": "[variables('streamName')]",
        "OP_SENTINEL_HISTORY_STREAM": "[variables('historyStreamName')]",
        "OP_SENTINEL_STATE": "[variables('stateUrl')]",
        "OP_SENTINEL_TOKEN": "[format('@Microsoft.KeyVault(SecretUri={0})', variables('tokenSecretUri'))]",
        "OP_SENTINEL_BASE_URL": "[parameters('onePasswordBaseUrl')]",
        # Read by the Functions app (opsentinel.functions), not by op-sentinel's Settings.
        "OP_SENTINEL_SCHEDULE": "[parameters('schedule')]",
        "OP_SENTINEL_FANOUT": "[if(parameters('queueFanOut'), '1', '0')]",
        "OP_SENTINEL_LATE_WINDOW": "[parameters('lateWindow')]",
    }


def _parameters() -> dict[str, Any]:
    parameters = sentinel_parameters()
    parameters.update(
        {
            "functionAppLocation": param(
                "string",
                "Region of the function app and its storage, plan, identity, Key Vault and Application "
                "Insights. Empty (the default): the same region as the data collection rule. Flex "
                "Consumption is not offered in every region (az functionapp list-flexconsumption-locations).",
                defaultValue="",
            ),
            "functionAppName": param(
                "string",
                "Name of the function app (globally unique host name).",
                defaultValue="[format('op-sentinel-{0}', uniqueString(resourceGroup().id))]",
            ),
            "storageAccountName": param(
                "string",
                "Name of the storage account (3-24 lowercase letters and digits, globally unique).",
                defaultValue="[format('opsent{0}', uniqueString(resourceGroup().id))]",
                minLength=3,
                maxLength=24,
            ),
            "stateContainerName": param(
                "string",
                "Blob container for op-sentinel's checkpoints (OP_SENTINEL_STATE).",
                defaultValue="op-sentinel-state",
            ),
            "identityName": param(
                "string", "Name of the user-assigned managed identity.", defaultValue="op-sentinel-identity"
            ),
            "planName": param(
                "string", "Name of the Flex Consumption plan.", defaultValue="op-sentinel-plan"
            ),
            "applicationInsightsName": param(
                "string", "Name of the Application Insights component.", defaultValue="op-sentinel-insights"
            ),
            "applicationInsightsWorkspaceId": param(
                "string",
                "Resource id of the Log Analytics workspace for the app's own telemetry. Empty (the "
                "default): the Sentinel workspace.",
                defaultValue="",
            ),
            "keyVaultName": param(
                "string",
                "Name of the Key Vault to create (3-24 letters, digits, dashes; globally unique). Unused "
                "with existingTokenSecretUri.",
                defaultValue="[format('opsent-{0}', uniqueString(resourceGroup().id))]",
                minLength=3,
                maxLength=24,
            ),
            "tokenSecretName": param(
                "string", "Name of the secret holding the 1Password token.", defaultValue="op-sentinel-token"
            ),
            "onePasswordToken": param(
                "securestring",
                "The 1Password Events API token, written to the Key Vault secret. Leave empty to set or "
                "rotate the secret yourself (az keyvault secret set); a deployment without it keeps the "
                "secret as it is.",
                defaultValue="",
            ),
            "existingTokenSecretUri": param(
                "string",
                "Versionless URI of an existing secret holding the token "
                "(https://VAULT.vault.azure.net/secrets/NAME). When set, no Key Vault is created; grant "
                "the identity Key Vault Secrets User on that vault yourself.",
                defaultValue="",
            ),
            "secretsOfficerPrincipalId": param(
                "string",
                "Object id of a user or group to grant Key Vault Secrets Officer on the new vault, so it "
                "can set and rotate the token (az ad signed-in-user show --query id -o tsv).",
                defaultValue="",
            ),
            "secretsOfficerPrincipalType": param(
                "string",
                "Type of secretsOfficerPrincipalId.",
                defaultValue="User",
                allowedValues=["User", "Group", "ServicePrincipal"],
            ),
            "onePasswordBaseUrl": param(
                "string",
                "Events API base URL (OP_SENTINEL_BASE_URL). Empty: derived from the token.",
                defaultValue="",
            ),
            "schedule": param(
                "string",
                "Timer schedule (OP_SENTINEL_SCHEDULE), NCRONTAB with seconds first.",
                defaultValue=DEFAULT_SCHEDULE,
            ),
            "queueFanOut": param(
                "bool",
                "Spread the work over instances (OP_SENTINEL_FANOUT): each tick puts one message per "
                "account on the queue op-sentinel-accounts and a queue-triggered function works each "
                "account. For many accounts; with one, the timer alone is enough.",
                defaultValue=False,
            ),
            "lateWindow": param(
                "string",
                "How late an event may arrive and still be kept (OP_SENTINEL_LATE_WINDOW).",
                defaultValue=DEFAULT_LATE_WINDOW,
            ),
            "pythonVersion": param(
                "string",
                "Python version of the function app.",
                defaultValue="3.11",
                allowedValues=["3.11", "3.12"],
            ),
            "maximumInstanceCount": param(
                "int",
                "Most instances Flex Consumption may scale out to.",
                defaultValue=40,
                minValue=1,
                maxValue=1000,
            ),
            "instanceMemoryMB": param(
                "int", "Memory of each instance.", defaultValue=2048, allowedValues=[512, 2048, 4096]
            ),
        }
    )
    return parameters


def _variables() -> dict[str, Any]:
    variables = sentinel_variables()
    variables.update(
        {
            "identityId": (
                "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', parameters('identityName'))]"
            ),
            "storageAccountId": (
                "[resourceId('Microsoft.Storage/storageAccounts', parameters('storageAccountName'))]"
            ),
            "planId": "[resourceId('Microsoft.Web/serverfarms', parameters('planName'))]",
            "applicationInsightsId": (
                "[resourceId('Microsoft.Insights/components', parameters('applicationInsightsName'))]"
            ),
            "applicationInsightsWorkspaceId": (
                "[if(empty(parameters('applicationInsightsWorkspaceId')), variables('workspaceResourceId'), "
                "parameters('applicationInsightsWorkspaceId'))]"
            ),
            "keyVaultId": "[resourceId('Microsoft.KeyVault/vaults', parameters('keyVaultName'))]",
            "createKeyVault": "[empty(parameters('existingTokenSecretUri'))]",
            "blobEndpoint": (
                "[format('https://{0}.blob.{1}', parameters('storageAccountName'), "
                "environment().suffixes.storage)]"
            ),
            "stateUrl": "[format('{0}/{1}', variables('blobEndpoint'), parameters('stateContainerName'))]",
            "packageUrl": f"[format('{{0}}/{{1}}', variables('blobEndpoint'), '{PACKAGE_CONTAINER}')]",
            "tokenSecretUri": (
                "[if(empty(parameters('existingTokenSecretUri')), "
                "format('https://{0}{1}/secrets/{2}', parameters('keyVaultName'), "
                "environment().suffixes.keyvaultDns, parameters('tokenSecretName')), "
                "parameters('existingTokenSecretUri'))]"
            ),
            "storageBlobDataOwner": role_definition(STORAGE_BLOB_DATA_OWNER_ROLE),
            "storageQueueDataContributor": role_definition(STORAGE_QUEUE_DATA_CONTRIBUTOR_ROLE),
            "keyVaultSecretsUser": role_definition(KEY_VAULT_SECRETS_USER_ROLE),
            "keyVaultSecretsOfficer": role_definition(KEY_VAULT_SECRETS_OFFICER_ROLE),
        }
    )
    return variables


def _identity_role(
    *, scope: str, scope_id: str, role: str, depends_on: str, description: str, condition: str | None = None
) -> tuple[str, dict[str, Any]]:
    """A role for the app's identity: (its resource id, for dependsOn; the resource)."""
    resource = role_assignment(
        condition=condition,
        scope=scope,
        scope_id=scope_id,
        role=role,
        principal_id=f"[{_IDENTITY}.principalId]",
        principal_key="variables('identityId')",
        principal_type="ServicePrincipal",
        depends_on=[depends_on, "[variables('identityId')]"],
        description=description,
    )
    name = resource["name"][1:-1]
    return f"[extensionResourceId({scope_id}, 'Microsoft.Authorization/roleAssignments', {name})]", resource


def _resources() -> list[dict[str, Any]]:
    storage_scope = "[format('Microsoft.Storage/storageAccounts/{0}', parameters('storageAccountName'))]"
    vault_scope = "[format('Microsoft.KeyVault/vaults/{0}', parameters('keyVaultName'))]"
    identity = {
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "apiVersion": IDENTITY_API,
        "name": "[parameters('identityName')]",
        "location": _APP_LOCATION,
    }
    storage = {
        "type": "Microsoft.Storage/storageAccounts",
        "apiVersion": STORAGE_API,
        "name": "[parameters('storageAccountName')]",
        "location": _APP_LOCATION,
        "kind": "StorageV2",
        "sku": {"name": "Standard_LRS"},
        "properties": {
            "allowSharedKeyAccess": False,
            "allowBlobPublicAccess": False,
            "defaultToOAuthAuthentication": True,
            "minimumTlsVersion": "TLS1_2",
            "supportsHttpsTrafficOnly": True,
        },
    }
    blob_service = {
        "type": "Microsoft.Storage/storageAccounts/blobServices",
        "apiVersion": STORAGE_API,
        "name": "[format('{0}/default', parameters('storageAccountName'))]",
        "dependsOn": ["[variables('storageAccountId')]"],
        "properties": {},
    }
    blob_service_id = (
        "[resourceId('Microsoft.Storage/storageAccounts/blobServices', "
        "parameters('storageAccountName'), 'default')]"
    )
    containers = [
        {
            "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
            "apiVersion": STORAGE_API,
            "name": f"[format('{{0}}/default/{{1}}', parameters('storageAccountName'), {name})]",
            "dependsOn": [blob_service_id],
            "properties": {},
        }
        for name in (f"'{PACKAGE_CONTAINER}'", "parameters('stateContainerName')")
    ]
    insights = {
        "type": "Microsoft.Insights/components",
        "apiVersion": INSIGHTS_API,
        "name": "[parameters('applicationInsightsName')]",
        "location": _APP_LOCATION,
        "kind": "web",
        "properties": {
            "Application_Type": "web",
            "WorkspaceResourceId": "[variables('applicationInsightsWorkspaceId')]",
            "DisableLocalAuth": True,  # telemetry only with the identity (Monitoring Metrics Publisher)
        },
    }
    vault = {
        "condition": "[variables('createKeyVault')]",
        "type": "Microsoft.KeyVault/vaults",
        "apiVersion": KEY_VAULT_API,
        "name": "[parameters('keyVaultName')]",
        "location": _APP_LOCATION,
        "properties": {
            "tenantId": "[subscription().tenantId]",
            "sku": {"family": "A", "name": "standard"},
            "enableRbacAuthorization": True,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "publicNetworkAccess": "Enabled",
        },
    }
    secret = {
        "condition": "[and(variables('createKeyVault'), not(empty(parameters('onePasswordToken'))))]",
        "type": "Microsoft.KeyVault/vaults/secrets",
        "apiVersion": KEY_VAULT_API,
        "name": "[format('{0}/{1}', parameters('keyVaultName'), parameters('tokenSecretName'))]",
        "dependsOn": ["[variables('keyVaultId')]"],
        "properties": {
            "value": "[parameters('onePasswordToken')]",
            "contentType": "1Password Events API token",
        },
    }
    roles = [
        _identity_role(
            scope=storage_scope,
            scope_id="variables('storageAccountId')",
            role="variables('storageBlobDataOwner')",
            depends_on="[variables('storageAccountId')]",
            description="op-sentinel: Functions host storage, code package and checkpoint blobs",
        ),
        _identity_role(
            scope=storage_scope,
            scope_id="variables('storageAccountId')",
            role="variables('storageQueueDataContributor')",
            depends_on="[variables('storageAccountId')]",
            description="op-sentinel: queue fan-out of (account, stream) units",
        ),
        _identity_role(
            condition="[variables('createKeyVault')]",
            scope=vault_scope,
            scope_id="variables('keyVaultId')",
            role="variables('keyVaultSecretsUser')",
            depends_on="[variables('keyVaultId')]",
            description="op-sentinel: read the 1Password token through the Key Vault reference",
        ),
        _identity_role(
            scope=DCR_SCOPE,
            scope_id="variables('dataCollectionRuleId')",
            role="variables('monitoringMetricsPublisher')",
            depends_on=DCR_ID,
            description="op-sentinel: upload 1Password events through this data collection rule",
        ),
        _identity_role(
            scope="[format('Microsoft.Insights/components/{0}', parameters('applicationInsightsName'))]",
            scope_id="variables('applicationInsightsId')",
            role="variables('monitoringMetricsPublisher')",
            depends_on="[variables('applicationInsightsId')]",
            description="op-sentinel: send the function app's telemetry with Entra ID authentication",
        ),
    ]
    officer = role_assignment(
        condition="[and(variables('createKeyVault'), not(empty(parameters('secretsOfficerPrincipalId'))))]",
        scope=vault_scope,
        scope_id="variables('keyVaultId')",
        role="variables('keyVaultSecretsOfficer')",
        principal_id="[parameters('secretsOfficerPrincipalId')]",
        principal_key="parameters('secretsOfficerPrincipalId')",
        principal_type="[parameters('secretsOfficerPrincipalType')]",
        depends_on=["[variables('keyVaultId')]"],
        description="op-sentinel: set and rotate the 1Password token secret",
    )
    plan = {
        "type": "Microsoft.Web/serverfarms",
        "apiVersion": WEB_API,
        "name": "[parameters('planName')]",
        "location": _APP_LOCATION,
        "kind": "functionapp",
        "sku": {"name": "FC1", "tier": "FlexConsumption"},
        "properties": {"reserved": True},
    }
    site = {
        "type": "Microsoft.Web/sites",
        "apiVersion": WEB_API,
        "name": "[parameters('functionAppName')]",
        "location": _APP_LOCATION,
        "kind": "functionapp,linux",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {"[variables('identityId')]": {}}},
        # Roles first: the host's storage and the Key Vault reference work from the first start.
        "dependsOn": [
            "[variables('planId')]",
            "[variables('applicationInsightsId')]",
            DCR_ID,
            DCE_DEPENDENCY,
            TABLE_ID,
            *[
                f"[resourceId('Microsoft.Storage/storageAccounts/blobServices/containers', "
                f"parameters('storageAccountName'), 'default', {name})]"
                for name in (f"'{PACKAGE_CONTAINER}'", "parameters('stateContainerName')")
            ],
            (
                "[resourceId('Microsoft.KeyVault/vaults/secrets', parameters('keyVaultName'), "
                "parameters('tokenSecretName'))]"
            ),
            *(role_id for role_id, _ in roles),
        ],
        "properties": {
            "serverFarmId": "[variables('planId')]",
            "httpsOnly": True,
            "keyVaultReferenceIdentity": "[variables('identityId')]",
            "functionAppConfig": {
                "deployment": {
                    "storage": {
                        "type": "blobContainer",
                        "value": "[variables('packageUrl')]",
                        "authentication": {
                            "type": "UserAssignedIdentity",
                            "userAssignedIdentityResourceId": "[variables('identityId')]",
                        },
                    }
                },
                "scaleAndConcurrency": {
                    "maximumInstanceCount": "[parameters('maximumInstanceCount')]",
                    "instanceMemoryMB": "[parameters('instanceMemoryMB')]",
                },
                "runtime": {"name": "python", "version": "[parameters('pythonVersion')]"},
            },
            "siteConfig": {
                "minTlsVersion": "1.2",
                "ftpsState": "Disabled",
                "appSettings": [{"name": k, "value": v} for k, v in function_app_settings().items()],
            },
        },
    }
    return [
        *sentinel_resources(),
        identity,
        storage,
        blob_service,
        *containers,
        insights,
        vault,
        secret,
        *(resource for _, resource in roles),
        officer,
        plan,
        site,
    ]


def _outputs() -> dict[str, Any]:
    outputs = sentinel_outputs()
    outputs.update(
        {
            "functionAppName": {"type": "string", "value": "[parameters('functionAppName')]"},
            "identityPrincipalId": {"type": "string", "value": f"[{_IDENTITY}.principalId]"},
            "identityClientId": {"type": "string", "value": f"[{_CLIENT_ID}]"},
            "storageAccountName": {"type": "string", "value": "[parameters('storageAccountName')]"},
            "stateUrl": {"type": "string", "value": "[variables('stateUrl')]"},
            "keyVaultName": {
                "type": "string",
                "value": "[if(variables('createKeyVault'), parameters('keyVaultName'), '')]",
            },
            "tokenSecretUri": {"type": "string", "value": "[variables('tokenSecretUri')]"},
        }
    )
    return outputs


def build_function_app_template() -> dict[str, Any]:
    """The `--function-app` ARM template (resource-group scope) as a JSON-ready dict."""
    return template_document(
        "op-sentinel on Azure Functions (Flex Consumption): the OnePasswordEventLogs_CL table (and "
        "OnePasswordEventLogsHistory_CL for a first run's history), data collection endpoint and rule, a "
        "function app with a user-assigned managed identity, its storage (no shared keys) and Application "
        "Insights, a Key Vault holding the 1Password token, and every role assignment they need.",
        _parameters(),
        _variables(),
        _resources(),
        _outputs(),
    )
