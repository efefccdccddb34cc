"""agentstream: the command line and process glue around the four packages.

``schemas``, ``ingest``, ``analytics`` and ``routing`` never import each other; this package is
the one place that may import all of them (to start them from one command line).
"""
