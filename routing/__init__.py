"""The routing service: scores in, escalate/continue decisions out, and Exotel's HTTP
callbacks (Passthru, Connect, StatusCallback) answered from memory.

``service`` wires one instance: ``http`` (the aiohttp app), ``reader`` (decisions, calls and
transcripts into memory), ``evaluator_loop`` (owned scores -> ``router`` -> decisions),
``publisher`` (to Kafka). ``router`` (with ``evaluator`` and ``state``) has no Kafka or HTTP
code.

May import ``schemas`` and third-party libraries only: never ``ingest``, ``analytics`` or
``agentstream``.
"""
