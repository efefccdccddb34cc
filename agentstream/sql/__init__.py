"""``agentstream query "SQL"``: the topics as DuckDB tables, one per topic, for analysts.

``columns`` turns each topic's JSON Schema (``schemas/json/``) into DuckDB column types,
``tables`` loads topic records into tables, ``reader`` reads the named topics from Kafka and
``output`` prints a result as a table, CSV, JSON lines or Parquet. May import ``schemas`` and
the Kafka and DuckDB clients; the services' packages are not needed.
"""
