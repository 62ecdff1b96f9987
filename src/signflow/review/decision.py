"""The deciding half of `signflow pr-report`: verdicts, the gate, the images that flipped, the data diff.

Everything comes from files git holds in both revisions (``metrics/
predictions.csv``, ``metrics/data.json``, ``metrics/data_tracks.csv``,
``params.yaml``), so the base's side needs no DVC pull; only the pictures
(flipped images, new images) read head's decoded arrays in the workspace, and
their absence is said in the report, never a failure.

The gate's guards and the statistics' settings are read from the **base**'s
``params.yaml`` (``review:``): a pull request is judged by the rules it is
proposed against. ``evaluate.ece_bins`` is head's, as head's ECE was measured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from signflow import paths
from signflow.config import Config, ReviewConfig, from_mapping, load_yaml
from signflow.data.manifest import DataError
from signflow.markdown import relative_link
from signflow.processes import run
from signflow.review.compare import Review, compare_predictions, joined_flips_frame, read_predictions
from signflow.review.gate import GateResult, check_gate
from signflow.review.verdict import verdict_section

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

GIT_SECONDS = 120.0  # bound on one `git show` of a small file
FLIPS_PNG = "flips.png"
NEW_IMAGES_PNG = "new_images.png"
NEW_IMAGES_SAMPLE = 16  # thumbnails of new images in the data section


def read_at(repo: Path, revision: str, path: Path) -> str | None:
    """The text of ``path`` at ``revision`` (None when it is not there); ``revision=None`` reads the workspace."""
    listed = run(["git", "ls-tree", "--name-only", revision, "--", path.as_posix()], repo, timeout=GIT_SECONDS)
    if not listed.stdout.strip():
        return None
    return run(["git", "show", f"{revision}:{path.as_posix()}"], repo, timeout=GIT_SECONDS).stdout


def read_workspace(repo: Path, path: Path) -> str | None:
    file = repo / path
    return file.read_text() if file.is_file() else None


def review_config(params_text: str | None) -> ReviewConfig:
    """``review:`` of a params.yaml text, validated like the rest (ConfigError naming the key); defaults without."""
    params = load_yaml(params_text) if params_text else None
    section = params.get("review", {}) if isinstance(params, dict) else {}
    return from_mapping(ReviewConfig, section or {}, "review")


def ece_bins(params_text: str | None) -> int:
    params = load_yaml(params_text) if params_text else None
    evaluate = params.get("evaluate", {}) if isinstance(params, dict) else {}
    return from_mapping(Config, {"evaluate": evaluate or {}}).evaluate.ece_bins


@dataclass(frozen=True)
class Decision:
    """The review's markdown sections and the gate (None: nothing to compare, so nothing gated)."""

    sections: tuple[str, ...]
    gate: GateResult | None
    review: Review | None = None



def flips_section(repo: Path, review: Review, base_frame: pd.DataFrame, head_frame: pd.DataFrame, cfg: ReviewConfig,
                  images_dir: Path | None, markdown_dir: Path) -> str:
    """The images that flipped on test.accuracy, with the gallery PNG when head's arrays are in the workspace."""
    from signflow.review.gallery import draw_flip_gallery, find_flips, flips_markdown

    title = "### Images that flipped (test.accuracy)"
    if not review.paired:
        return f"{title}\n\nThe test sets differ: no image is in both, so none can flip."
    flips = find_flips(joined_flips_frame(base_frame, head_frame))
    link, note = None, ""
    if images_dir is not None and cfg.flips_shown > 0:
        out = Path(images_dir) / FLIPS_PNG
        try:
            draw_flip_gallery(flips, repo / paths.DATASET_DIR, out, cfg.flips_shown)
            link = relative_link(out, markdown_dir) if out.exists() else None
        except (FileNotFoundError, DataError) as err:  # the pictures only: the verdict stands without them
            note = f"\n\nNo gallery: {err}"
            log.warning("flip gallery not drawn: %s", err)
    return f"{title}\n\n" + flips_markdown(flips, link, cfg.flips_shown) + note


def data_section(repo: Path, base: str, images_dir: Path | None, markdown_dir: Path, seed: int) -> str:
    """What changed in the data (per class, tracks, quarantine, sizes), from the summaries git holds."""
    from signflow.review.datadiff import (
        DataFiles,
        compare_data,
        data_diff_markdown,
        draw_new_image_thumbnails,
        workspace_files,
    )

    before = DataFiles(read_at(repo, base, paths.DATA_TRACKS), read_at(repo, base, paths.DATA_SUMMARY))
    diff = compare_data(before, workspace_files(repo))
    thumbnails, note = None, ""
    if images_dir is not None and diff.new_tracks:
        out = Path(images_dir) / NEW_IMAGES_PNG
        try:
            if draw_new_image_thumbnails(diff.new_tracks, repo / paths.DATASET_DIR, out, NEW_IMAGES_SAMPLE, seed):
                thumbnails = out
        except FileNotFoundError as err:
            note = f"\n\nNo thumbnails of the new images: {err}"
            log.warning("new-image thumbnails not drawn: %s", err)
    return data_diff_markdown(diff, base, thumbnails, markdown_dir) + note


def decide(repo: Path, base: str, images_dir: Path | None, markdown_dir: Path) -> Decision:
    """Compare head's test predictions with base's; the sections the report shows and the gate's outcome."""
    cfg = review_config(read_at(repo, base, paths.PARAMS))
    base_text, head_text = read_at(repo, base, paths.PREDICTIONS), read_workspace(repo, paths.PREDICTIONS)
    data = data_section(repo, base, images_dir, markdown_dir, cfg.seed)
    if base_text is None or head_text is None:
        missing = " and ".join(side for side, text in (("base", base_text), ("head", head_text)) if text is None)
        note = (f"### Verdict: head against base\n\nNo `{paths.PREDICTIONS.as_posix()}` in {missing}: "
                "no test predictions to compare, so no verdict and nothing to gate.")
        return Decision((note, data), None)
    base_frame = read_predictions(base_text, f"{base}:{paths.PREDICTIONS.as_posix()}")
    head_frame = read_predictions(head_text, f"workspace {paths.PREDICTIONS.as_posix()}")
    review = compare_predictions(base_frame, head_frame, cfg, ece_bins(read_workspace(repo, paths.PARAMS)))
    gate = check_gate(review, cfg.guards)
    sections = (
        verdict_section(review, gate, cfg.confidence),
        flips_section(repo, review, base_frame, head_frame, cfg, images_dir, markdown_dir),
        data,
    )
    return Decision(sections, gate, review)
