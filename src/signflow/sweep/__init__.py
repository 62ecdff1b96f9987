"""`signflow sweep`'s work, one module per job (the command itself is ``signflow.commands.sweep``):

- ``grid``: `-S` assignments and --grid files into points, on DVC's own `-S` grammar and
  sweep expansion (Hydra's OverridesParser), each point applied and validated before queueing;
- ``runner``: queueing the points, starting workers, bounded polls of `dvc exp show`, failure notes;
- ``table``: the results as rows, sorted, written as Markdown and CSV.

Importing this package imports nothing: ``grid`` pulls in DVC and Hydra.
"""
