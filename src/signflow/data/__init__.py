"""Everything from an archive, a URL or a folder to the decoded arrays training reads.

One module per job, named after the DVC stage it serves:

- ``download`` stage: ``raw`` (source registry, validation, quarantine) with
  ``fetch`` (resumable, md5-checked download), ``archive`` (safe unzip) and
  ``sources/`` (``gtsrb``, ``folder``, ``synthetic``);
- ``split`` stage: ``split`` (stratified, track-grouped manifests);
- ``add_unknown`` stage: ``unknown`` (the "unknown" class and the held-out set),
  ``decode`` (every image decoded once, in parallel) and ``summary``
  (``metrics/data.json``, and ``metrics/data_tracks.csv`` per track for the review's data diff);
- shared by all: ``records`` (the raw-image record), ``images`` (the only place
  image files are opened), ``manifest`` (the per-image table and its roles) and
  ``arrays`` (the decoded uint8 arrays later stages memory-map).

Importing this package imports nothing: each stage pulls in only its modules.
"""
