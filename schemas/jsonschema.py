"""JSON Schema of each topic's value, built from the models (``schemas/json/<topic>.json``).

:func:`render` builds every file's bytes and does no I/O; ``python -m schemas.jsonschema`` (or
``make schemas``) writes them after a model changes. A unit test fails while the checked-in
files and the models disagree.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.topics import ALL_TOPICS

JSON_DIR = Path(__file__).parent / "json"


def render() -> dict[str, bytes]:
    """File name -> JSON Schema bytes for every topic in the catalogue (pure)."""
    out: dict[str, bytes] = {}
    for spec in ALL_TOPICS:
        schema = spec.value.model_json_schema(mode="serialization")
        schema["$id"] = f"https://agentstream.dev/schemas/{spec.name}.json"
        schema["x-topic"] = {
            "name": spec.name,
            "key": spec.key,
            "value_encoding": spec.value_encoding,
            "partitions": spec.partitions,
            "cleanup_policy": spec.cleanup_policy,
        }
        out[f"{spec.name}.json"] = orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n"
    return out


if __name__ == "__main__":  # the writer: only `python -m schemas.jsonschema` touches the disk
    JSON_DIR.mkdir(parents=True, exist_ok=True)
    for _name, _data in render().items():
        (JSON_DIR / _name).write_bytes(_data)
        print(f"wrote {JSON_DIR / _name}")
