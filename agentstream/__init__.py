"""agentstream: the command line, the call simulator and the local stack around the services.

``ingest``, ``analytics`` and ``routing`` each import only ``schemas`` (never each other), and
``schemas`` imports none of them. This package is the one place that may import every package:
its commands start and configure the services. It holds

- ``cli`` and ``commands/``: the ``agentstream`` entry point, one module per subcommand (they
  may import every package; a service's heavy modules load only when its command runs);
- ``sim/``: the Exotel call simulator, a client of the pipeline (imports ``schemas`` only);
- ``stack/``: the embedded broker, topic admin, process supervision and the multi-process stack
  for tests and benches (imports ``schemas`` only; starts the services through the CLI).

No package imports ``agentstream``.
"""
