"""One module per ``signflow`` subcommand, each with ``add_arguments(parser)`` and ``run(args)``.

``predict``, ``list_backbones``, ``log_run``, ``pr_report``, ``remote``,
``sweep``, ``mlflow_server`` and ``preset``; ``args`` holds what several share
(argparse types, the one-line failure). ``signflow.cli`` registers them by name
and imports only the one that runs, so ``signflow --help`` imports none.
"""
