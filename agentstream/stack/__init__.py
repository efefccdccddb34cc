"""The local stack: embedded broker, topic admin, process supervision, and the multi-process
stack that tests and benches start (:class:`agentstream.stack.local.LocalStack`).

Development and test infrastructure, not part of the pipeline: production runs Apache Kafka and
starts the services on its own. May import ``schemas`` and its own modules only; it starts the
services as child processes through the ``agentstream`` command line and never imports
``ingest``, ``analytics``, ``routing`` or the simulator.
"""
