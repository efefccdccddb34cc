"""The captured demo-call records as the SQL loader's input (real bytes from a pipeline run)."""

from __future__ import annotations

import base64

from agentstream.sql.tables import TopicRecord
from tests.data import topic_records


def captured() -> dict[str, list[TopicRecord]]:
    """Table name -> records, exactly as the pipeline wrote them."""
    out: dict[str, list[TopicRecord]] = {}
    for row in topic_records():
        value = (
            base64.b64decode(str(row["value_base64"]))
            if "value_base64" in row
            else str(row["value"]).encode()
        )
        headers = row["headers"]
        assert isinstance(headers, list)
        record = TopicRecord(
            topic=str(row["topic"]),
            partition=int(str(row["partition"])),
            offset=int(str(row["offset"])),
            key=str(row["key"]).encode(),
            value=value,
            timestamp_ms=int(str(row["timestamp_ms"])),
            headers=[(str(k), str(v).encode()) for k, v in headers],
        )
        out.setdefault(record.topic, []).append(record)
    return out
