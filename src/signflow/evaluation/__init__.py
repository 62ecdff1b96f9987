"""How good a model is, and the report that shows it.

- ``metrics``: closed-set metrics (accuracy, macro F1, ECE, per class, Wilson
  intervals), pure functions over arrays;
- ``openset``: everything open-set: known-ness scores, the "unknown" decision
  (``decide``), the threshold chosen on validation (``choose_threshold``) and
  read back at prediction time (``resolve_threshold``), ROC and open-set metrics;
- ``threshold``: the threshold policies (``POLICIES``: ``se_rule``, ``known_kept``,
  ``heldout_rejected``) that choose it on validation, and the trade-off curve
  of known images kept against held-out ones rejected;
- ``slices``: accuracy and rejection of the test split by slice (sign size,
  position in its track, data source), evaluate.json's ``slice.*`` keys;
- ``evaluate``: the evaluate stage's work (scores the splits, writes
  ``metrics/evaluate.json``, ``predictions.csv`` and the plot data);
- ``report``: the report stage (``reports/pipeline/``); ``plots``: its figures.

``openset`` imports numpy only, so the light prediction path can use it.
Importing this package imports nothing.
"""
