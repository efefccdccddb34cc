"""The ingest service: Exotel Stream/Voicebot WebSockets in, Kafka records out.

``server`` (app, HTTP front door, wiring) -> ``connection`` (one socket) -> ``session`` (the
Exotel protocol, returns :class:`~ingest.outgoing.Outgoing` records) -> ``sink`` (queues,
headers, partitions, Kafka). ``voicebot``/``upstream`` relay Voicebot calls, ``decisions`` and
``handoff`` act on escalations, ``sweeper`` enforces timeouts.

May import ``schemas`` and third-party libraries only: never ``analytics``, ``routing`` or
``agentstream``.
"""
