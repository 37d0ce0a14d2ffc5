"""A small evaluator for the KQL of DCR transforms: just what the 1Password transforms use.

Supported: `source | project ... | extend ...` with `name = expr` assignments and bare column names;
expressions with `and`, `or`, `==`, `!=`, parentheses, string/number/bool literals, `['quoted']`
identifiers, dynamic member access (`a.b`, `a['b']`), and the functions `now`, `tostring`, `coalesce`,
`case`, `iff`/`iif`, `isempty`, `isnotempty`, `isnull`, `isnotnull`, `not`. Any other operator or
function is an error (DCR transforms allow one-row operators only; we implement fewer).

Types follow Log Analytics: input columns are typed by the stream declaration (`string` -> str, ""
when absent; `int` -> int or None; `datetime` -> aware datetime or None; `dynamic` -> `Dyn`), and
undeclared input fields are ignored. `evaluate` returns the transform's output converted to the
table's column types (string -> str, never None; int; datetime; dynamic -> plain JSON value or None).

Written from the Kusto docs for a test oracle; independent of opsentinel's own conversion code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Dyn", "KqlError", "compile_transform", "evaluate"]


class KqlError(ValueError):
    pass


@dataclass(frozen=True)
class Dyn:
    """A Kusto `dynamic` value (None = null)."""

    value: Any


# --- values -----------------------------------------------------------------------------------

_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})?$")


def _to_datetime(value: Any) -> datetime | None:
    if isinstance(value, Dyn):
        value = value.value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    m = _TIME.match(value.strip())
    if not m:
        return None
    date, clock, fraction, offset = m.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    tz = "+00:00" if offset in (None, "Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{date}T{clock}.{micro}{tz}").astimezone(UTC)
    except ValueError:
        return None


def _to_int(value: Any) -> int | None:
    if isinstance(value, Dyn):
        value = value.value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tostring(value: Any) -> str:
    """Kusto `tostring`: null -> "", a dynamic string -> itself, objects/arrays -> compact JSON."""
    if isinstance(value, Dyn):
        value = value.value
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return _json(value)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, Dyn) and value.value is None)


def _is_empty(value: Any) -> bool:
    if _is_null(value):
        return True
    inner = value.value if isinstance(value, Dyn) else value
    return isinstance(inner, str) and inner == ""


def _truthy(value: Any) -> bool:
    inner = value.value if isinstance(value, Dyn) else value
    return inner is True


def typed_input(kind: str, value: Any) -> Any:
    """A raw JSON field as the stream declaration types it."""
    if kind == "string":
        return tostring(value)
    if kind in ("int", "long"):
        return _to_int(value)
    if kind == "datetime":
        return _to_datetime(value)
    if kind == "dynamic":
        return Dyn(value)
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "real":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    raise KqlError(f"unknown column type {kind!r}")


def typed_output(kind: str, value: Any) -> Any:
    """A transform result as the table column type stores it."""
    kind = kind.lower()  # the tables API spells it dateTime, Microsoft's own table datetime
    if kind == "string":
        return tostring(value)
    if kind in ("int", "long"):
        return _to_int(value)
    if kind == "datetime":
        return _to_datetime(value)
    if kind == "dynamic":
        return value.value if isinstance(value, Dyn) else value
    raise KqlError(f"unknown column type {kind!r}")


# --- parsing ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<qident>\[\s*(?P<q>'|")(?P<qname>[^'"]+)(?P=q)\s*\])
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<num>\d+(?:\.\d+)?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>==|!=|[|,()=.])
    )""",
    re.VERBOSE,
)

Expr = Callable[[Mapping[str, Any], "Context"], Any]


@dataclass(frozen=True)
class Context:
    now: datetime


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise KqlError(f"cannot read KQL at {text[pos : pos + 30]!r}")
        pos = m.end()
        if m.group("qident"):
            tokens.append(("qident", m.group("qname")))
        elif m.group("str"):
            raw = m.group("str")
            tokens.append(("str", re.sub(r"\\(.)", r"\1", raw[1:-1])))
        elif m.group("num"):
            tokens.append(("num", m.group("num")))
        elif m.group("ident"):
            tokens.append(("ident", m.group("ident")))
        else:
            tokens.append(("op", m.group("op")))
    return tokens


_FUNCTIONS = {
    *("now", "tostring", "coalesce", "case", "iff", "iif"),
    *("isempty", "isnotempty", "isnull", "isnotnull", "not"),
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            raise KqlError(f"expected {value or kind}, got {tok}")
        self.i += 1
        return tok

    def at(self, kind: str, value: str) -> bool:
        return self.peek() == (kind, value)

    def query(self) -> list[tuple[str, list[tuple[str, Expr]]]]:
        self.take("ident", "source")
        stages: list[tuple[str, list[tuple[str, Expr]]]] = []
        while self.peek() is not None:
            self.take("op", "|")
            _, operator = self.take("ident")
            if operator not in ("project", "extend"):
                raise KqlError(f"operator {operator!r} is not supported")
            stages.append((operator, self.assignments()))
        return stages

    def assignments(self) -> list[tuple[str, Expr]]:
        items = [self.assignment()]
        while self.at("op", ","):
            self.take("op", ",")
            items.append(self.assignment())
        return items

    def assignment(self) -> tuple[str, Expr]:
        tok = self.peek()
        nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
        if tok is not None and tok[0] in ("ident", "qident") and nxt == ("op", "="):
            self.i += 2
            return tok[1], self.expr()
        start = self.i
        expr = self.expr()
        if self.i == start + 1 and tok is not None and tok[0] in ("ident", "qident"):
            return tok[1], expr
        raise KqlError("a computed column needs a name (name = expression)")

    def expr(self) -> Expr:
        left = self.conjunction()
        while self.at("ident", "or"):
            self.take()
            right = self.conjunction()
            left = (lambda a, b: lambda row, ctx: _truthy(a(row, ctx)) or _truthy(b(row, ctx)))(left, right)
        return left

    def conjunction(self) -> Expr:
        left = self.comparison()
        while self.at("ident", "and"):
            self.take()
            right = self.comparison()
            left = (lambda a, b: lambda row, ctx: _truthy(a(row, ctx)) and _truthy(b(row, ctx)))(left, right)
        return left

    def comparison(self) -> Expr:
        left = self.postfix()
        if self.at("op", "==") or self.at("op", "!="):
            _, op = self.take()
            right = self.postfix()

            def compare(row: Mapping[str, Any], ctx: Context, a: Expr = left, b: Expr = right) -> bool:
                x, y = a(row, ctx), b(row, ctx)
                x = x.value if isinstance(x, Dyn) else x
                y = y.value if isinstance(y, Dyn) else y
                return (x == y) if op == "==" else (x != y)

            return compare
        return left

    def postfix(self) -> Expr:
        expr = self.primary()
        while True:
            tok = self.peek()
            if self.at("op", "."):
                self.take()
                _, name = self.take("ident")
            elif tok is not None and tok[0] == "qident":  # a['b']
                _, name = self.take()
            else:
                return expr
            expr = (lambda inner, key: lambda row, ctx: _member(inner(row, ctx), key))(expr, name)

    def primary(self) -> Expr:
        tok = self.take()
        kind, value = tok
        if kind == "str":
            return lambda row, ctx, v=value: v
        if kind == "num":
            number = float(value) if "." in value else int(value)
            return lambda row, ctx, v=number: v
        if kind == "op" and value == "(":
            inner = self.expr()
            self.take("op", ")")
            return inner
        if kind == "qident":
            return lambda row, ctx, name=value: _column(row, name)
        if kind == "ident":
            if value in ("true", "false"):
                return lambda row, ctx, v=(value == "true"): v
            if self.at("op", "("):
                return self.call(value)
            return lambda row, ctx, name=value: _column(row, name)
        raise KqlError(f"unexpected {value!r}")

    def call(self, name: str) -> Expr:
        if name not in _FUNCTIONS:
            raise KqlError(f"function {name!r} is not supported")
        self.take("op", "(")
        args: list[Expr] = []
        if not self.at("op", ")"):
            args.append(self.expr())
            while self.at("op", ","):
                self.take()
                args.append(self.expr())
        self.take("op", ")")
        return _function(name, args)


def _column(row: Mapping[str, Any], name: str) -> Any:
    if name not in row:
        raise KqlError(f"unknown column {name!r}")
    return row[name]


def _member(value: Any, key: str) -> Dyn:
    if not isinstance(value, Dyn):
        raise KqlError(f"member access .{key} on a non-dynamic value")
    inner = value.value
    return Dyn(inner.get(key) if isinstance(inner, dict) else None)


def _function(name: str, args: Sequence[Expr]) -> Expr:
    def arity(n: int) -> None:
        if len(args) != n:
            raise KqlError(f"{name}() takes {n} argument(s)")

    if name == "now":
        arity(0)
        return lambda row, ctx: ctx.now
    if name == "tostring":
        arity(1)
        return lambda row, ctx: tostring(args[0](row, ctx))
    if name in ("isempty", "isnotempty", "isnull", "isnotnull", "not"):
        arity(1)
        test = {"isempty": _is_empty, "isnull": _is_null, "not": _truthy}[name.replace("isnot", "is")]
        negate = name.startswith("isnot") or name == "not"
        return lambda row, ctx: test(args[0](row, ctx)) != negate
    if name == "coalesce":
        if len(args) < 2:
            raise KqlError("coalesce() takes at least 2 arguments")

        def coalesce(row: Mapping[str, Any], ctx: Context) -> Any:
            value: Any = None
            for arg in args:
                value = arg(row, ctx)
                if not _is_null(value) and not (isinstance(value, str) and value == ""):
                    return value
            return value

        return coalesce
    if name in ("iff", "iif"):
        arity(3)
        return lambda row, ctx: args[1](row, ctx) if _truthy(args[0](row, ctx)) else args[2](row, ctx)
    if name == "case":
        if len(args) < 3 or len(args) % 2 == 0:
            raise KqlError("case() takes pairs of condition, value, then an else value")

        def case(row: Mapping[str, Any], ctx: Context) -> Any:
            for cond, value in zip(args[0:-1:2], args[1:-1:2], strict=True):
                if _truthy(cond(row, ctx)):
                    return value(row, ctx)
            return args[-1](row, ctx)

        return case
    raise KqlError(f"function {name!r} is not supported")  # pragma: no cover


# --- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    stages: list[tuple[str, list[tuple[str, Expr]]]]

    def run(self, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        ctx = Context(now)
        current = dict(row)
        for operator, items in self.stages:
            computed: dict[str, Any] = {}
            for name, expr in items:
                computed[name] = expr({**current, **computed}, ctx)
            current = computed if operator == "project" else {**current, **computed}
        return current


def compile_transform(text: str) -> Transform:
    return Transform(_Parser(text).query())


def evaluate(
    transform_text: str,
    record: Mapping[str, Any],
    *,
    stream_columns: Sequence[Mapping[str, str]],
    table_columns: Sequence[Mapping[str, str]],
    now: datetime,
) -> dict[str, Any]:
    """Run a DCR transform on one uploaded record; return the table row (every table column)."""
    declared = {c["name"]: c["type"] for c in stream_columns}
    row = {name: typed_input(kind, record.get(name)) for name, kind in declared.items()}
    out = compile_transform(transform_text).run(row, now)
    if "TimeGenerated" not in out:
        raise KqlError("the transform must output TimeGenerated")
    return {c["name"]: typed_output(c["type"], out.get(c["name"])) for c in table_columns}
