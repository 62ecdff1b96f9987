"""`signflow sweep`'s work, one module per job (the command itself is ``signflow.commands.sweep``):

- ``grid``: `-S` assignments and --grid files into points, on DVC's own `-S` grammar and
  sweep expansion (Hydra's OverridesParser), each point applied and validated before queueing;
- ``runner``: queueing the points, starting workers, bounded polls of `dvc exp show`, failure notes;
- ``table``: the results as rows, sorted, written as Markdown and CSV; over seeds, a summary per point first;
- ``seeds``: per-point mean, sd and 95% t-interval over seeds, ranking by the lower bound, the "top" mark;
- ``mlflow_parent``: the finished sweep as one MLflow parent run, its experiments' runs nested under it.

Importing this package imports nothing: ``grid`` pulls in DVC and Hydra.
"""
