"""The pull-request review: this workspace against a base revision.

- ``report``: ``signflow pr-report``'s markdown (params, metrics and plots
  that changed, via ``dvc params/metrics diff``);
- ``plots``: base-against-head charts of the plot files that changed.

Importing this package imports nothing.
"""
