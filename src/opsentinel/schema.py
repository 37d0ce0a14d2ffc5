"""The `OnePasswordEventLogs_CL` table: 33 columns, their order and types. Single source of truth.

Copied from Microsoft's 1Password solution (`Solutions/1Password/Data Connectors/1Password_ccpv2/
1Password_tables.json`, package 3.0.6) and its DCR stream declaration (`1Password_DCR.json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

TABLE_NAME: Final = "OnePasswordEventLogs_CL"
DCR_STREAM_NAME: Final = "Custom-OnePasswordEventLogs_CL"
# Where a first run's history goes in Sentinel: a table no analytic rule reads (docs/deploy-sentinel.md).
HISTORY_TABLE_NAME: Final = "OnePasswordEventLogsHistory_CL"
DCR_HISTORY_STREAM_NAME: Final = "Custom-OnePasswordEventLogsHistory_CL"

Kind = Literal["string", "datetime", "dynamic", "int"]

DUCKDB_TYPES: Final[dict[str, str]] = {
    "string": "VARCHAR",
    "datetime": "TIMESTAMPTZ",
    "dynamic": "JSON",
    "int": "BIGINT",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind

    @property
    def duckdb_type(self) -> str:
        return DUCKDB_TYPES[self.kind]


def _cols(spec: str) -> tuple[Column, ...]:
    out = []
    for part in spec.split():
        name, kind = part.split(":")
        out.append(Column(name, kind))  # type: ignore[arg-type]
    return tuple(out)


# The table, in order (1Password_tables.json).
COLUMNS: Final = _cols(
    """
    SourceSystem:string TimeGenerated:datetime uuid_s:string session_uuid:string timestamp:datetime
    country:string category:string action_type:string details:dynamic target_user:dynamic
    client:dynamic location:dynamic actor_uuid:string actor_details:dynamic actor_type:string
    actor_account_uuid:string account_uuid:string user_type:string user_account_uuid:string
    action:string object_type:string object_uuid:string object_details:dynamic aux_id:int
    aux_uuid:string aux_details:dynamic aux_info:string session:dynamic used_version:int
    vault_uuid:string item_uuid:string user:dynamic log_source:string
    """
)
COLUMN_NAMES: Final = tuple(c.name for c in COLUMNS)

# The official DCR's input stream declaration, in order (1Password_DCR.json): raw API field names.
DCR_INPUT_COLUMNS: Final = _cols(
    """
    uuid:string session_uuid:string timestamp:datetime category:string type:string country:string
    details:dynamic target_user:dynamic client:dynamic location:dynamic account_uuid:string
    used_version:int vault_uuid:string item_uuid:string action:string user:dynamic actor_uuid:string
    actor_details:dynamic actor_type:string actor_account_uuid:string object_type:string
    object_uuid:string object_details:dynamic aux_id:int aux_uuid:string aux_details:dynamic
    aux_info:string session:dynamic
    """
)

assert len(COLUMNS) == 33
assert len(DCR_INPUT_COLUMNS) == 28
