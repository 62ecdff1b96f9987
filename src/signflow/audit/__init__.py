"""The ``audit`` stage: what the data holds, reported and never changed.

One module per job:

- ``duplicates``: near-identical images in two splits (perceptual hashes of
  the decoded arrays, ``signflow.data.hashes``), per split pair and class,
  and the leakage warning for a folder without track ids;
- ``labels``: suspect labels by confident learning (cleanlab) on out-of-fold
  probabilities of a logistic regression on frozen backbone features,
  cross-validated by track;
- ``profile``: original image sizes and brightness per split and class;
- ``gallery``: the figures (closest pairs side by side, top suspects);
- ``run``: everything assembled (``run_audit``) and the report written
  (``write_report``: README, PNGs, CSVs).

Importing this package imports nothing: the stage pulls in what it runs.
"""
