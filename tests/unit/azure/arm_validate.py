"""Validate an ARM template against Microsoft's published schemas, vendored in arm_schemas/ (no network).

Two checks:

- `schema_errors`: JSON Schema (draft 4, as the files declare) validation of the whole template
  against `2019-04-01/deploymentTemplate.json`, every `$ref` resolved from the vendored files;
- `undeclared_properties`: every property the template sets is declared by those schemas. Upstream
  allows unknown properties nearly everywhere, so a misspelt property name would pass the first check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SCHEMAS = Path(__file__).with_name("arm_schemas")
BASE = "https://schema.management.azure.com/schemas/"
DEPLOYMENT_TEMPLATE = BASE + "2019-04-01/deploymentTemplate.json"
EXPRESSION = BASE + "common/definitions.json#/definitions/expression"


@cache
def documents() -> dict[str, dict[str, Any]]:
    """Every vendored schema by its URI (its `id` without the trailing '#')."""
    out = {}
    for path in sorted(SCHEMAS.rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        uri = doc["id"].rstrip("#")
        assert uri == BASE + path.relative_to(SCHEMAS).as_posix(), f"{path}: id {uri} does not match its path"
        out[uri] = doc
    return out


@cache
def registry() -> Registry:
    return Registry().with_resources(
        (uri, Resource.from_contents(doc, default_specification=DRAFT4)) for uri, doc in documents().items()
    )


def _short(error: ValidationError) -> str:
    # Descend to the most relevant leaf of oneOf/anyOf failures; messages embed the instance, cut them.
    while error.context:
        error = max(error.context, key=lambda e: (len(e.absolute_path), -len(e.schema_path)))
    where = "/".join(str(p) for p in error.absolute_path) or "(top)"
    message = error.message if len(error.message) < 200 else error.message[:200] + "..."
    return f"{where}: {message}"


def schema_errors(template: Mapping[str, Any]) -> list[str]:
    """Schema violations, one line each (empty when the template is valid).

    The whole template is validated against deploymentTemplate.json; each resource is also validated
    against its own type's definition alone, which gives a precise line when the first check fails.
    """
    validator = Draft4Validator(documents()[DEPLOYMENT_TEMPLATE], registry=registry())
    out = [_short(e) for e in validator.iter_errors(template)]
    for i, resource in enumerate(template.get("resources", [])):
        try:
            found = resource_definition(resource["type"], resource["apiVersion"])
        except (LookupError, KeyError, TypeError) as exc:
            out.append(f"resources/{i}: {exc}")
            continue
        single = Draft4Validator(
            {
                "allOf": [
                    {"$ref": BASE + "common/definitions.json#/definitions/resourceBase"},
                    {"$ref": found["uri"]},
                ]
            },
            registry=registry(),
        )
        out.extend(f"resources/{i}/{_short(e)}" for e in single.iter_errors(resource))
    return out


def resource_definition(type_: str, api_version: str) -> dict[str, Any]:
    """The provider schema for a resource type and apiVersion, with its base URI, from the vendored files."""
    for uri, doc in documents().items():
        for section in ("resourceDefinitions", "unknown_resourceDefinitions"):
            for name, definition in doc.get(section, {}).items():
                props = definition.get("properties", {})
                if type_ in props.get("type", {}).get("enum", []) and api_version in props.get(
                    "apiVersion", {}
                ).get("enum", []):
                    return {"uri": f"{uri}#/{section}/{name}", "schema": definition}
    raise LookupError(f"no vendored schema for {type_} {api_version}")


def _resolve(schema: dict[str, Any], base: str) -> tuple[dict[str, Any], str]:
    while "$ref" in schema:
        ref = schema["$ref"]
        target = ref if ref.startswith("https://") else base.split("#")[0] + ref
        resolved = registry().resolver().lookup(target)
        schema, base = resolved.contents, target
    return schema, base


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and not value.startswith("[[")


def _undeclared(value: Any, schema: dict[str, Any], base: str, path: str) -> Iterator[str]:
    schema, base = _resolve(schema, base)
    if _is_expression(value):
        return
    branches = schema.get("oneOf") or schema.get("anyOf")
    if branches:
        # The branch that is not the expression form describes the literal value.
        literal = [b for b in branches if b.get("$ref") != EXPRESSION]
        for branch in literal[:1]:
            yield from _undeclared(value, branch, base, path)
        return
    if isinstance(value, dict):
        declared = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in declared:
                yield from _undeclared(item, declared[key], base, f"{path}.{key}")
            elif isinstance(extra, dict):
                yield from _undeclared(item, extra, base, f"{path}.{key}")
            elif extra is not True and declared is not None and "properties" in schema:
                yield f"{path}.{key}: not declared in {base}"
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _undeclared(item, schema["items"], base, f"{path}[{i}]")


# Keys every resource may carry (deploymentTemplate.json: ARMResourceBase, resourceBase).
_RESOURCE_BASE = {
    "name",
    "type",
    "condition",
    "apiVersion",
    "dependsOn",
    "location",
    "tags",
    "copy",
    "scope",
    "comments",
}


def undeclared_properties(template: Mapping[str, Any]) -> list[str]:
    """Properties the template sets that the vendored schemas do not declare."""
    out = []
    for i, resource in enumerate(template["resources"]):
        found = resource_definition(resource["type"], resource["apiVersion"])
        declared = set(found["schema"]["properties"]) | _RESOURCE_BASE
        for key, value in resource.items():
            where = f"resources[{i}]({resource['type']}).{key}"
            if key not in declared:
                out.append(f"{where}: not declared in {found['uri']}")
            elif key in found["schema"]["properties"]:
                out.extend(_undeclared(value, found["schema"]["properties"][key], found["uri"], where))
    template_schema = documents()[DEPLOYMENT_TEMPLATE]
    for section, definition in (("parameters", "parameter"), ("outputs", "output")):
        allowed = set(template_schema["definitions"][definition]["properties"])
        for name, spec in template.get(section, {}).items():
            out.extend(f"{section}.{name}.{key}: not declared" for key in spec if key not in allowed)
    return out
