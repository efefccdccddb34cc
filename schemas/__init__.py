"""The wire contracts every service shares: topic records, topics, Exotel events and
callbacks, rules, dead letters, the partitioner and the common Kafka settings fields.

Pure data and parsing, no I/O. May import only the standard library and third-party
libraries (pydantic, orjson, PyYAML, aiokafka's partitioner): never ``ingest``, ``analytics``,
``routing`` or ``agentstream``.
"""
