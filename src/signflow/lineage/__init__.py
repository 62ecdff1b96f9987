"""From a served model back to its data and code, and a champion only with evidence.

What each run records about its origin is written by ``signflow.provenance``
(a base module: every stage's MLflow run logs it). This package reads it back,
one module per job:

- ``refs``: a model reference, run id or DVC experiment name resolved to its
  MLflow run and registered version;
- ``trace``: ``signflow trace``'s account of where a model came from, and
  ``--restore``, which rebuilds that state in a new clone and checks the
  model files byte for byte;
- ``promotion``: ``signflow promote``, the review gate between a candidate and
  the current champion, the ``champion``/``previous`` aliases and the record
  of every decision on the versions.

Importing this package imports nothing: each command pulls in only its modules.
"""
