"""Everything from an archive, a URL or a folder to the decoded arrays training reads.

One module per job, named after the DVC stage it serves:

- ``fingerprint`` stage: ``fingerprint`` (the source's inputs outside the project, a folder's
  files or a mirror file, as one file ``download`` depends on);
- ``download`` stage: ``raw`` (source registry, validation, quarantine) with
  ``fetch`` (resumable, md5-checked download), ``archive`` (safe unzip) and
  ``sources/`` (``gtsrb``, ``folder``, ``synthetic``);
- ``split`` stage: ``split`` (stratified, grouped manifests; ``split.exclude``) with
  ``hashes`` (perceptual hashes, near-duplicate pairs and clusters; the audit uses them too);
- ``add_unknown`` stage: ``unknown`` (the "unknown" class and the held-out set),
  ``decode`` (every image decoded once, in parallel) and ``summary``
  (``metrics/data.json``, and ``metrics/data_tracks.csv`` per track for the review's data diff);
- shared by all: ``records`` (the raw-image record), ``images`` (the only place
  image files are opened), ``manifest`` (the per-image table and its roles) and
  ``arrays`` (the decoded uint8 arrays later stages memory-map).

Importing this package imports nothing: each stage pulls in only its modules.
"""
