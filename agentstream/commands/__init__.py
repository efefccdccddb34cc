"""One module per ``agentstream`` subcommand, each exposing ``register(subparsers)``."""
