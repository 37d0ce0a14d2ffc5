"""Microsoft's 1Password solution files, read from ../shared/reference/sentinel (tests only)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "sentinel"


@cache
def load(name: str) -> Any:
    return json.loads((REFERENCE / name).read_text())


def official_table_columns() -> list[dict[str, str]]:
    return list(load("1Password_tables.json")["properties"]["schema"]["columns"])


def official_dcr() -> dict[str, Any]:
    return dict(load("1Password_DCR.json"))


def official_stream_columns() -> list[dict[str, str]]:
    return list(
        official_dcr()["properties"]["streamDeclarations"]["Custom-OnePasswordEventLogs_CL"]["columns"]
    )


def official_transform() -> str:
    return str(official_dcr()["properties"]["dataFlows"][0]["transformKql"])


def transform_history() -> dict[str, str]:
    return {k: v for k, v in load("1Password_DCR_transformKql_history.json").items() if not k.startswith("_")}
