"""DuckDB column types from a topic's JSON Schema (the checked-in ``schemas/json/*.json``).

Nested objects become ``STRUCT``s (``sentiment.score``), lists become lists (``keywords[1]``),
string-keyed dictionaries become ``MAP(VARCHAR, T)`` (``keyword_hits['legal_threat']``), and
``X | None`` is a nullable ``X``. Pure: a schema in, column names and types out.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson

_SCALARS = {"integer": "BIGINT", "number": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN"}


def load_schema(topic: str) -> dict[str, Any]:
    """The JSON Schema of a catalogue topic's value, from the ``schemas`` package."""
    data = resources.files("schemas").joinpath("json", f"{topic}.json").read_bytes()
    schema = orjson.loads(data)
    assert isinstance(schema, dict)
    return schema


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duck_type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """The DuckDB type of one JSON Schema node."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        return duck_type(defs[ref.rsplit("/", 1)[-1]], defs)
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        kinds = [duck_type(o, defs) for o in options if o.get("type") != "null"]
        distinct = set(kinds)
        return kinds[0] if len(distinct) == 1 else "JSON"
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return duck_type({**node, "type": kinds[0]}, defs) if len(kinds) == 1 else "JSON"
    if kind in _SCALARS:
        return _SCALARS[kind]
    if "enum" in node or "const" in node:
        return "VARCHAR"
    if kind == "array":
        if "prefixItems" in node:  # a tuple, e.g. a span [start, end)
            items = {duck_type(i, defs) for i in node["prefixItems"]}
            return (items.pop() if len(items) == 1 else "JSON") + "[]"
        return duck_type(node.get("items", {}), defs) + "[]"
    if kind == "object":
        props = node.get("properties")
        if props:
            return struct_type(props, defs)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return f"MAP(VARCHAR, {duck_type(extra, defs)})"
        return "JSON"
    return "JSON"


def struct_type(props: dict[str, Any], defs: dict[str, Any]) -> str:
    fields = ", ".join(f"{quote(name)} {duck_type(sub, defs)}" for name, sub in props.items())
    return f"STRUCT({fields})"


def columns(schema: dict[str, Any]) -> dict[str, str]:
    """Top-level column name -> DuckDB type, in the schema's order."""
    defs = schema.get("$defs", {})
    return {name: duck_type(node, defs) for name, node in schema["properties"].items()}
