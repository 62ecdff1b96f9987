"""signflow.commands: one module per `signflow` subcommand."""
