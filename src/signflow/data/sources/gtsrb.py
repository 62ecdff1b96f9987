"""The German Traffic Sign Recognition Benchmark (GTSRB) training and official test sets as raw records.

The official archive unpacks to ``GTSRB/Training/000NN/`` with one
``GT-000NN.csv`` per class (``;``-separated: Filename, Width, Height, Roi.X1,
Roi.Y1, Roi.X2, Roi.Y2, ClassId) and images named ``TTTTT_FFFFF.ppm``, where
TTTTT is the physical sign's track: the up to 30 frames of one track are
near-identical, so the track is what splits must keep together. Image sizes
vary (about 15 to 250 px), so sizes and boxes always come from each CSV row.

The official test set is two archives: ``GTSRB_Final_Test_Images.zip``
(``GTSRB/Final_Test/Images/NNNNN.ppm``, 12,630 images without labels) and
``GTSRB_Final_Test_GT.zip`` (``GT-final_test.csv``, the same columns with the
class). Its images are single frames, so each is its own track; they are
extracted under ``official_test/`` so their paths never clash with training's.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

from signflow.data.archive import UnsafeArchiveError, safe_extract_zip
from signflow.data.fetch import fetch
from signflow.data.records import RawRecord

log = logging.getLogger(__name__)

DEFAULT_ARCHIVE_NAME = "GTSRB-Training_fixed.zip"  # used when a URL has no file name
CSV_DELIMITER = ";"
CSV_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
IMAGE_SUFFIXES = frozenset({".ppm"})
TRACK_SEPARATOR = "_"  # TTTTT_FFFFF.ppm
CLASS_DIR = re.compile(r"^\d{5}$")  # 000NN
GT_CSV = re.compile(r"^GT-\d{5}\.csv$")
MISSING_EXAMPLES = 5  # how many missing files a warning lists
OFFICIAL_TEST_DIR = "official_test"  # under the source root, beside GTSRB/Training
TEST_GT_CSV = "GT-final_test.csv"  # in GTSRB_Final_Test_GT.zip (the images zip has a label-less .test.csv)


@dataclass(frozen=True)
class GtsrbScan:
    """What a scan found: usable records and CSV rows whose image is missing."""

    records: list[RawRecord]
    missing: list[str] = field(default_factory=list)  # paths relative to root


def read_gtsrb_tree(root: Path) -> list[RawRecord]:
    """Records of every GTSRB training image under ``root``; missing files are logged."""
    return _warn_missing(scan_gtsrb_tree(root), root)


def _warn_missing(scan: GtsrbScan, root: Path) -> list[RawRecord]:
    if scan.missing:
        log.warning(
            "%d GT csv rows under %s reference missing images (skipped), e.g. %s",
            len(scan.missing),
            root,
            ", ".join(scan.missing[:MISSING_EXAMPLES]),
        )
    return scan.records


def scan_gtsrb_tree(root: Path) -> GtsrbScan:
    """Scan ``root`` (with or without the leading ``GTSRB/`` folder) for class dirs.

    A class dir with a GT csv is read from it; one with images but no csv falls
    back to the directory name as class and the file name for the track, with
    unknown size (0) and no box.
    """
    root = Path(root)
    class_dirs = find_class_dirs(root)
    if not class_dirs:
        raise FileNotFoundError(f"no GTSRB class directories (000NN/ with GT-000NN.csv or .ppm images) under {root}")
    records: list[RawRecord] = []
    missing: list[str] = []
    for class_dir in class_dirs:
        found, lost = _read_class_dir(root, class_dir)
        records.extend(found)
        missing.extend(lost)
    log.info("read %d GTSRB images in %d class dirs under %s", len(records), len(class_dirs), root)
    return GtsrbScan(records, missing)


def find_class_dirs(root: Path) -> list[Path]:
    """Every ``000NN`` directory under ``root`` holding a GT csv or images, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        path = Path(dirpath)
        if CLASS_DIR.match(path.name) and any(_is_gt_csv(f) or _is_image(f) for f in filenames):
            found.append(path)
    return sorted(found)


def materialise_gtsrb(url: str, md5: str | None, raw_dir: Path, download_dir: Path) -> list[RawRecord]:
    """Fetch the archive into the ``download_dir`` cache, extract it to ``raw_dir``, read it."""
    archive = fetch(url, Path(download_dir) / archive_name(url), md5)
    safe_extract_zip(archive, Path(raw_dir))
    return read_gtsrb_tree(Path(raw_dir))


def materialise_gtsrb_test(
    images_url: str, images_md5: str | None, gt_url: str, gt_md5: str | None, root: Path, download_dir: Path
) -> list[RawRecord]:
    """Fetch the official test images and ground truth, extract the images under ``root/official_test``.

    Returns their records, paths relative to ``root``; ground-truth rows whose
    image is missing are logged and skipped, like the training set's.
    """
    images_zip = fetch(images_url, Path(download_dir) / archive_name(images_url), images_md5)
    gt_zip = fetch(gt_url, Path(download_dir) / archive_name(gt_url), gt_md5)
    test_root = Path(root) / OFFICIAL_TEST_DIR
    safe_extract_zip(images_zip, test_root)
    text, name = _read_gt_csv(gt_zip), f"{gt_zip}:{TEST_GT_CSV}"
    first = next(csv.DictReader(io.StringIO(text), delimiter=CSV_DELIMITER), None)
    if first is None:
        raise ValueError(f"{name} has no rows")
    image_dir = _dir_holding(test_root, (first.get("Filename") or "").strip(), images_zip)
    scan = _split_missing(Path(root), _parse_gt(io.StringIO(text), Path(root), image_dir, name))
    log.info("read %d official GTSRB test images", len(scan.records))
    return _warn_missing(scan, test_root)


def _read_gt_csv(gt_zip: Path) -> str:
    """The ground-truth CSV's text, read from its zip in place (nothing is extracted)."""
    try:
        with zipfile.ZipFile(gt_zip) as zf:
            names = [n for n in zf.namelist() if Path(n).name == TEST_GT_CSV]
            if not names:
                raise FileNotFoundError(f"{gt_zip} has no {TEST_GT_CSV}; is it GTSRB_Final_Test_GT.zip?")
            return zf.read(names[0]).decode("utf-8-sig")
    except (zipfile.BadZipFile, EOFError) as err:
        raise UnsafeArchiveError(f"{gt_zip} is not a readable zip file ({err}); delete it and download again") from err


def _dir_holding(root: Path, filename: str, archive: Path) -> Path:
    """The directory of the extracted ``archive`` that holds ``filename``."""
    found = next(iter(sorted(root.rglob(filename))), None) if filename else None
    if found is None:
        raise FileNotFoundError(f"{archive} has no {filename!r}, the first image its ground truth names")
    return found.parent


def archive_name(url: str) -> str:
    """The file name a URL or path ends with, so different sources do not collide in the cache."""
    name = Path(urlparse(url).path).name if "://" in url else Path(url).name
    return name or DEFAULT_ARCHIVE_NAME


def _read_class_dir(root: Path, class_dir: Path) -> tuple[list[RawRecord], list[str]]:
    csv_paths = sorted(p for p in class_dir.iterdir() if _is_gt_csv(p.name))
    if not csv_paths:
        log.info("%s has no GT csv; using directory name as class and no sizes", class_dir)
        return _records_without_csv(root, class_dir), []
    scan = _split_missing(root, [record for csv_path in csv_paths for record in _records_from_csv(root, csv_path)])
    return scan.records, scan.missing


def _records_from_csv(root: Path, csv_path: Path) -> list[RawRecord]:
    """Parse one GT csv; a malformed row fails with the file and line, not silently."""
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        return _parse_gt(fh, root, csv_path.parent, str(csv_path))


def _parse_gt(fh: TextIO, root: Path, image_dir: Path, name: str) -> list[RawRecord]:
    """Records of a GT csv whose file names live in ``image_dir``; ``name`` labels errors."""
    reader = csv.DictReader(fh, delimiter=CSV_DELIMITER)
    absent = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if absent:
        raise ValueError(f"{name}: missing columns {absent}; expected {CSV_DELIMITER.join(CSV_COLUMNS)}")
    try:
        return [_row_record(root, image_dir, row) for row in reader]
    except ValueError as err:
        raise ValueError(f"{name}:{reader.line_num}: bad row ({err})") from err


def _split_missing(root: Path, records: list[RawRecord]) -> GtsrbScan:
    present = [r for r in records if (root / r.path).is_file()]
    return GtsrbScan(present, [r.path for r in records if not (root / r.path).is_file()])


def _row_record(root: Path, class_dir: Path, row: dict[str, str]) -> RawRecord:
    filename = (row["Filename"] or "").strip()
    if not filename:
        raise ValueError("empty Filename")
    # A short row yields None for its last columns; int("") then names the problem.
    values = [int((row[c] or "").strip()) for c in CSV_COLUMNS[1:]]
    width, height, x1, y1, x2, y2, class_id = values
    return RawRecord(
        path=(class_dir / filename).relative_to(root).as_posix(),
        class_id=str(class_id),
        track=track_of(filename),
        width=width,
        height=height,
        x1=x1,
        y1=y1,
        x2=x2,
        y2=y2,
    )


def _records_without_csv(root: Path, class_dir: Path) -> list[RawRecord]:
    class_id = str(int(class_dir.name))
    images = sorted(p for p in class_dir.iterdir() if _is_image(p.name) and p.is_file())
    return [RawRecord(path=p.relative_to(root).as_posix(), class_id=class_id, track=track_of(p.name)) for p in images]


def track_of(filename: str) -> str:
    """The TTTTT of ``TTTTT_FFFFF.ppm``; the whole stem if there is no separator."""
    return Path(filename).stem.split(TRACK_SEPARATOR, 1)[0]


def _is_gt_csv(name: str) -> bool:
    return GT_CSV.match(name) is not None


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES
