"""The scoring stage: final transcripts and call events -> Score records with per-call state.

``stage`` is the plain engine (redact -> sentiment -> keywords -> call state), ``agent`` its faust
wiring (table, changelog guard, the loop around the stage); ``sentiment`` is the scorer
interface, ``engines`` builds and implements the sentiment engines, ``batcher`` micro-batches
them across calls.

May import :mod:`schemas` and its own modules; only ``agent`` imports faust/aiokafka; nothing
from :mod:`analytics.asr`.
"""
