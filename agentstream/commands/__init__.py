"""One module per ``agentstream`` subcommand, each exposing ``register(subparsers)``.

Commands may import every package (``schemas``, ``ingest``, ``analytics``, ``routing``,
``agentstream.sim``, ``agentstream.stack``). ``cli`` imports every command to build the parser,
so a command imports the service modules it runs (models, servers, the simulator) inside its
``run``; a command never imports another command except ``query``, which reuses ``tail``'s
record rendering.
"""
