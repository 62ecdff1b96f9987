"""Procedural German traffic signs that look like GTSRB crops: the offline data source.

This package renders offline GTSRB-like data. Why procedural: the pipeline must
run end to end with no download, and a model trained here is later judged on
real GTSRB photos, so the images imitate what a dash camera makes of a sign, not
clean icons. Each sign is drawn once, crisp, on a ``CANVAS`` px canvas from a
table of paint layers (``SIGN_TYPES``), then degraded in two levels, like
GTSRB's tracks of one physical sign:

* per track (one physical sign seen by one car): faded/hue-shifted paint, dirt,
  shading, a background scene, pole or plate, lighting, colour cast, viewpoint,
  maybe an occluder, and a series of frame sizes growing as the car approaches;
* per frame: perspective warp into a frame with a GTSRB-like margin (10 %, at
  least a few px), small jitter, downscale, optical and motion blur, tone curve,
  sensor noise and JPEG re-compression.

Every (class, track) gets its own ``np.random.Generator`` spawned from the seed,
so the files are byte-identical whatever the worker count or order. What to
render comes from ``params.yaml`` ``data.synthetic`` (``signflow.config.SyntheticConfig``).

Modules, one job each:

* ``draw``: drawing primitives in unit coordinates (origin at the sign's centre,
  1 unit = half its width), paint colours, outlines, layer builders and the sign
  families (``SignSpec``);
* ``signs``: the catalogue of the 43 GTSRB classes (``SIGN_TYPES``, ``resolve_sign``);
* ``ranges``: the randomisation ranges, each with why it has its value;
* ``scene``: the procedural backdrops behind a sign;
* ``render``: per-track style, per-frame degradation, ``render_sign`` and
  ``render_dataset``.
"""

from signflow.data.sources.synthetic.draw import SignSpec
from signflow.data.sources.synthetic.render import render_dataset, render_sign
from signflow.data.sources.synthetic.signs import SIGN_TYPES, resolve_sign

__all__ = ["SIGN_TYPES", "SignSpec", "render_dataset", "render_sign", "resolve_sign"]
