"""The analytics worker: speech to transcripts (:mod:`analytics.asr`) and transcripts to scores
(:mod:`analytics.scoring`), run as faust agents in one process (:mod:`analytics.worker`).

May import :mod:`schemas` only (never ``ingest``, ``routing`` or ``agentstream``); it meets the
other services through Kafka topics and the records of :mod:`schemas.records`.
"""
