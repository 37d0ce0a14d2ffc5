"""ARM template expressions: a parser, the catalogue of template functions, and a small evaluator.

The parser follows the documented syntax (https://aka.ms/arm-template-expressions): a string
`[expr]` is an expression (`[[` escapes a literal `[`); an expression is a string literal in single
quotes (`''` escapes a quote), an integer, or a function call, followed by any number of `.property`
and `[index]` accesses.

The evaluator knows the functions our templates use to compute names, resource ids and dependsOn
entries. Deployment-time values (`reference()`, `list*()`) cannot be known before deploying: they
raise `DeploymentTimeValue`, which is how a test proves a name never depends on them.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# Template functions, from Microsoft's reference (template-functions-*.md), lower case.
KNOWN_FUNCTIONS = frozenset(
    """
    array concat contains createarray empty first flatten indexof intersection items join last
    lastindexof length max min range skip take union tryget trygetunless
    filter map mapvalues reduce sort toobject groupby shallowmerge
    coalesce equals greater greaterorequals less lessorequals
    datetimeadd datetimefromepoch datetimetoepoch utcnow
    deployment environment parameters variables
    add div mod mul sub
    and bool false if not or true
    json null createobject objectkeys
    extensionresourceid list listkeys listsecrets listaccountsas listservicesas pickzones providers
    reference references resourcegroup resourceid subscription subscriptionresourceid
    managementgroup managementgroupresourceid tenant tenantresourceid
    base64 base64tojson base64tostring datauri datauritostring endswith format guid int lastindexof
    newguid padleft replace split startswith string substring tolower toupper trim uniquestring uri
    uricomponent uricomponenttostring
    """.split()
)
DEPLOYMENT_TIME = frozenset(
    {"reference", "references", "list", "listkeys", "listsecrets", "listaccountsas", "listservicesas"}
)
ARM_GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")


class ExpressionError(ValueError):
    """Not a well-formed ARM expression."""


class DeploymentTimeValue(Exception):
    """The value is only known while deploying (reference(), list*())."""


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Int:
    value: int


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Member:
    target: Node
    name: str


@dataclass(frozen=True)
class Index:
    target: Node
    index: Node


Node = Str | Int | Call | Member | Index

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<int>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),.\[\]]))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"unexpected character at {pos}: {text[pos : pos + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'a token'}, found {token}")
        self.pos += 1
        return token

    def expression(self) -> Node:
        kind, value = self.take()
        node: Node
        if kind == "str":
            node = Str(value[1:-1].replace("''", "'"))
        elif kind == "int":
            node = Int(int(value))
        elif kind == "name":
            self.take("(")
            args: list[Node] = []
            if self.peek() != ("punct", ")"):
                args.append(self.expression())
                while self.peek() == ("punct", ","):
                    self.take(",")
                    args.append(self.expression())
            self.take(")")
            node = Call(value, tuple(args))
        else:
            raise ExpressionError(f"unexpected {value!r}")
        while True:
            token = self.peek()
            if token == ("punct", "."):
                self.take(".")
                kind, name = self.take()
                if kind != "name":
                    raise ExpressionError(f"expected a property name after '.', found {name!r}")
                node = Member(node, name)
            elif token == ("punct", "["):
                self.take("[")
                node = Index(node, self.expression())
                self.take("]")
            else:
                return node


def parse(text: str) -> Node:
    """Parse the inside of `[ ... ]`."""
    parser = _Parser(text)
    node = parser.expression()
    if parser.peek() is not None:
        raise ExpressionError(f"trailing input: {parser.tokens[parser.pos :]}")
    return node


def expression_of(value: str) -> str | None:
    """The expression inside a template string, or None for a literal."""
    if value.startswith("[[") or not (value.startswith("[") and value.endswith("]")):
        return None
    return value[1:-1]


def calls(node: Node) -> Iterator[Call]:
    """Every function call in the tree."""
    if isinstance(node, Call):
        yield node
        for arg in node.args:
            yield from calls(arg)
    elif isinstance(node, Member):
        yield from calls(node.target)
    elif isinstance(node, Index):
        yield from calls(node.target)
        yield from calls(node.index)


def strings(node: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """(path, string) for every string in a JSON value, dictionary keys included."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}<key>", key
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")


def arm_guid(*parts: str) -> str:
    """ARM's guid(): a name-based (v5) UUID over a fixed namespace of the arguments joined by '-'."""
    return str(uuid.uuid5(ARM_GUID_NAMESPACE, "-".join(parts)))


def stand_in_unique_string(*parts: str) -> str:
    """A deterministic 13-character stand-in for uniqueString() (not ARM's exact hash)."""
    return hashlib.sha256("-".join(parts).encode()).hexdigest()[:13]


@dataclass
class Context:
    """What a deployment would know: the scope and the parameter values."""

    template: Mapping[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    subscription_id: str = "00000000-0000-0000-0000-000000000001"
    tenant_id: str = "00000000-0000-0000-0000-0000000000aa"
    resource_group: str = "sentinel-rg"
    # What reference(id, ...) returns during a simulated deployment; without an entry it is unknown.
    references: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def resource_group_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"

    def parameter(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        spec = self.template["parameters"][name]
        if "defaultValue" not in spec:
            raise KeyError(f"parameter {name} has no value and no default")
        return self.value(spec["defaultValue"])

    def variable(self, name: str) -> Any:
        return self.value(self.template["variables"][name])

    def value(self, raw: Any) -> Any:
        """A template value with its expressions evaluated."""
        if isinstance(raw, str):
            inner = expression_of(raw)
            if inner is None:
                return raw[1:] if raw.startswith("[[") else raw
            return evaluate(parse(inner), self)
        if isinstance(raw, dict):
            return {self.value(k): self.value(v) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        return raw


def _resource_id(scope: str, type_: str, names: list[str]) -> str:
    namespace, *types = type_.split("/")
    if len(types) != len(names):
        raise ExpressionError(f"{type_} needs {len(types)} names, got {names}")
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"{scope}/providers/{namespace}/{path}"


def _format(template: str, *args: Any) -> str:
    def render(value: Any) -> str:
        if isinstance(value, bool):
            return "True" if value else "False"
        return str(value)

    return re.sub(r"\{(\d+)\}", lambda m: render(args[int(m.group(1))]), template)


def evaluate(node: Node, ctx: Context) -> Any:
    if isinstance(node, Str):
        return node.value
    if isinstance(node, Int):
        return node.value
    if isinstance(node, Member):
        target = evaluate(node.target, ctx)
        return target[node.name]
    if isinstance(node, Index):
        return evaluate(node.target, ctx)[evaluate(node.index, ctx)]
    name = node.name.lower()
    if name == "reference":
        target = evaluate(node.args[0], ctx)
        if target in ctx.references:
            return ctx.references[target]
        raise DeploymentTimeValue(f"reference({target})")
    if name in DEPLOYMENT_TIME:
        raise DeploymentTimeValue(node.name)
    if name == "if":  # only the branch taken is evaluated, as ARM does
        condition, then, otherwise = node.args
        return evaluate(then if evaluate(condition, ctx) else otherwise, ctx)
    args = [evaluate(arg, ctx) for arg in node.args]
    functions: dict[str, Callable[..., Any]] = {
        "parameters": ctx.parameter,
        "variables": ctx.variable,
        "format": _format,
        "concat": lambda *a: "".join(str(x) for x in a),
        "guid": lambda *a: arm_guid(*a),
        "uniquestring": stand_in_unique_string,
        "tolower": str.lower,
        "empty": lambda v: v in ("", None) or v == [] or v == {},
        "not": lambda v: not v,
        "and": lambda *a: all(a),
        "or": lambda *a: any(a),
        "equals": lambda a, b: a == b,
        "createarray": lambda *a: list(a),
        "resourcegroup": lambda: {
            "id": ctx.resource_group_id,
            "name": ctx.resource_group,
            "location": "rglocation",
        },
        "subscription": lambda: {
            "id": f"/subscriptions/{ctx.subscription_id}",
            "subscriptionId": ctx.subscription_id,
            "tenantId": ctx.tenant_id,
        },
        "environment": lambda: {
            "suffixes": {"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"}
        },
        "resourceid": lambda type_, *names: _resource_id(ctx.resource_group_id, type_, list(names)),
        "subscriptionresourceid": lambda type_, *names: _resource_id(
            f"/subscriptions/{ctx.subscription_id}", type_, list(names)
        ),
        "extensionresourceid": lambda scope, type_, *names: _resource_id(scope, type_, list(names)),
    }
    if name not in functions:
        raise ExpressionError(f"the test evaluator does not implement {node.name}()")
    return functions[name](*args)


def resource_id(resource: Mapping[str, Any], ctx: Context) -> str:
    """The id a deployment gives a resource of the template (extension resources included)."""
    names = ctx.value(resource["name"]).split("/")
    if "scope" in resource:
        scope = f"{ctx.resource_group_id}/providers/{ctx.value(resource['scope'])}"
        return _resource_id(scope, resource["type"], names)
    return _resource_id(ctx.resource_group_id, resource["type"], names)
