"""An ImageFolder-style directory (one sub-folder per class) as a data source.

A class folder is named after the class id (``14/``) or its name in
``data.classes`` (``stop/``, as ImageFolder datasets usually are); either way its
records carry the id. Folders matching no class are kept under their own name:
they can feed the "unknown" class, as GTSRB's other signs do. Hidden files and
folders (``.DS_Store``, macOS ``._x.png`` resource forks, ``.ipynb_checkpoints/``)
and files without an image suffix are skipped and counted, never read.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from signflow.config import ConfigError
from signflow.data.images import IMAGE_SUFFIXES
from signflow.data.records import RawRecord

log = logging.getLogger(__name__)

HIDDEN_PREFIX = "."


def resolve_class_folders(folders: list[str], classes: Mapping[str, str], root: Path) -> dict[str, str]:
    """Map each folder name to its class id: a key of ``classes``, a name of one, or (neither) itself.

    Raises ``ConfigError`` when a name is ambiguous (the id of one class and the name of
    another) or when one class has two folders (its id and its name).
    """
    id_of_name = {name: class_id for class_id, name in classes.items()}
    mapping: dict[str, str] = {}
    for folder in folders:
        if folder in classes and folder in id_of_name and id_of_name[folder] != folder:
            raise ConfigError(
                f"data.folder.path: folder {root / folder}/ is both the id of class {folder!r} and the name of "
                f"class {id_of_name[folder]!r} in data.classes; rename the folder or the class"
            )
        mapping[folder] = folder if folder in classes else id_of_name.get(folder, folder)
    by_class: dict[str, list[str]] = {}
    for folder, class_id in mapping.items():
        by_class.setdefault(class_id, []).append(folder)
    for class_id, names in by_class.items():
        if len(names) > 1:
            raise ConfigError(
                f"data.folder.path: class {class_id!r} ({classes[class_id]}) has {len(names)} folders under {root}: "
                f"{sorted(names)}; keep one, named after its id or its name"
            )
    return mapping


@dataclass(frozen=True)
class FolderScan:
    """The files the source reads under a root, and those it skips, counted by reason."""

    images: dict[Path, list[Path]]  # each top-level folder (a class) -> its image files; both sorted
    skipped: Counter[str]


def scan_folder(root: Path) -> FolderScan:
    """The one rule of which files under ``root`` are the dataset: image suffixes in ``root/<folder>/``, none hidden.

    ``read_folder_tree`` reads these files, and the pipeline fingerprints exactly these
    (``signflow.data.fingerprint``), so a file the source skips never re-runs ``download``.
    """
    images: dict[Path, list[Path]] = {}
    skipped: Counter[str] = Counter()
    for path in sorted(root.iterdir()):
        if path.name.startswith(HIDDEN_PREFIX):
            skipped["hidden"] += 1
        elif path.is_dir():
            images[path] = _class_images(path, skipped)
        else:
            skipped["outside a class folder"] += 1
    return FolderScan(images, skipped)


def _class_images(folder: Path, skipped: Counter[str], *, hidden: bool = False) -> list[Path]:
    """The image files anywhere under ``folder``, sorted by path; others are counted in ``skipped``.

    ``os.scandir``, not ``rglob``: a file type comes with the listing, with no stat per file, which
    keeps the pipeline's fingerprint of a 200k-image folder (a walk on every `dvc repro`) in seconds.
    Like ``rglob``, a symlinked folder is not entered; a symlinked file counts.
    """
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)  # depth first, by name: sorted by path
    found = []
    for entry in entries:
        is_hidden = hidden or entry.name.startswith(HIDDEN_PREFIX)  # a hidden folder hides what it holds
        if entry.is_dir(follow_symlinks=False):
            found += _class_images(Path(entry.path), skipped, hidden=is_hidden)
        elif not entry.is_file():
            continue  # a symlinked folder, a broken link, a socket
        elif is_hidden:
            skipped["hidden"] += 1
        elif os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:  # Path.suffix, without a Path
            skipped["without an image suffix"] += 1
        else:
            found.append(Path(entry.path))
    return found


def read_folder_tree(
    root: Path, track_pattern: str = "", *, classes: Mapping[str, str] | None = None
) -> list[RawRecord]:
    """One record per image file under ``root/<class>/``.

    ``track_pattern`` is a regex whose first group is the track id in the file
    name (e.g. ``^(\\d+)_`` for GTSRB-style names); without it every image is
    its own track, the only safe assumption for unknown data. ``classes`` is
    ``data.classes``: each of its classes must have a folder with images.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data.folder.path: {root} is not a directory")
    classes = classes or {}
    pattern = re.compile(track_pattern) if track_pattern else None
    scan = scan_folder(root)
    class_of = resolve_class_folders([p.name for p in scan.images], classes, root)
    records, empty = [], []
    for class_dir, files in scan.images.items():
        class_id = class_of[class_dir.name]
        for path in files:
            match = pattern.search(path.name) if pattern else None
            track = match.group(1) if match else path.stem
            records.append(RawRecord(path=str(path.relative_to(root)), class_id=class_id, track=track))
        if not files:
            empty.append(class_dir)
    if not records:
        raise FileNotFoundError(
            f"data.folder.path: no images with suffixes {sorted(IMAGE_SUFFIXES)} under {root}/<class>/"
        )
    _check_targets(root, classes, class_of, empty)
    if empty:
        log.warning("folder %s: skipped %d folders with no images: %s", root, len(empty), [p.name for p in empty])
    if scan.skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(scan.skipped.items()))
        log.warning("folder %s: skipped %d files: %s", root, sum(scan.skipped.values()), reasons)
    log.info("folder %s: %d images in %d classes", root, len(records), len({r.class_id for r in records}))
    return records


def _check_targets(root: Path, classes: Mapping[str, str], class_of: Mapping[str, str], empty: list[Path]) -> None:
    """Every class of ``data.classes`` needs a folder with at least one image."""
    folder_of = {class_id: folder for folder, class_id in class_of.items()}
    missing = [f"{c} ({name})" for c, name in classes.items() if c not in folder_of]
    if missing:
        raise ConfigError(
            f"data.folder.path: no folder under {root} for data.classes {missing}: name each folder after the "
            f"class id or its name; found: {sorted(class_of)}"
        )
    hollow = [f"{folder_of[c]}/" for c in classes if root / folder_of[c] in empty]
    if hollow:
        raise ConfigError(
            f"data.folder.path: class folders {hollow} under {root} have no images "
            f"(suffixes {sorted(IMAGE_SUFFIXES)}); add images or remove the class from data.classes"
        )
