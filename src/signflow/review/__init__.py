"""The pull-request review: this workspace (head) against a base revision, and whether it may merge.

``signflow pr-report`` builds ``reports/pr.md``; ``--gate`` makes it a check.

- ``report``: the whole markdown, in order: verdicts, flips, data, then the
  params, metrics and plots that changed (``dvc params/metrics diff``), timings apart;
- ``decision``: reads both revisions' predictions, data summaries and ``review:``
  params from git and assembles the deciding sections;
- ``compare``: head against base metric by metric and per class, paired on the
  same test images, unpaired when the test sets differ;
- ``stats``: the tests and intervals (exact McNemar, Newcombe, stratified
  bootstrap, Bonferroni) and the verdict rule;
- ``gate``: the non-inferiority guards of ``review.guards``;
- ``verdict``: the verdict tables in markdown;
- ``gallery``: the images that flipped, read from head's decoded arrays;
- ``datadiff``: what changed in the data, from ``metrics/data_tracks.csv`` and ``data.json``;
- ``plots``: base-against-head charts of the plot files that changed;
- ``github``: the job summary, step outputs and PR comment on GitHub Actions.

Importing this package imports nothing.
"""
