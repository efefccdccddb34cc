"""Generate ``schemas/json/<topic>.json`` (JSON Schema of each topic's value) from the models.

Run ``python -m agentstream.jsonschemas`` (or ``make schemas``) after changing a model; a test
fails while the checked-in files and the models disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from schemas.topics import ALL_TOPICS

JSON_DIR = Path(__file__).resolve().parent.parent / "schemas" / "json"


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


def main() -> int:
    JSON_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in render().items():
        (JSON_DIR / name).write_bytes(data)
        print(f"wrote {JSON_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
