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
import re
from collections import Counter
from collections.abc import Mapping
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
    skipped: Counter[str] = Counter()
    folders = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(HIDDEN_PREFIX):
            skipped["hidden"] += 1
        elif path.is_dir():
            folders.append(path)
        else:
            skipped["outside a class folder"] += 1
    class_of = resolve_class_folders([p.name for p in folders], classes, root)
    records, empty = [], []
    for class_dir in folders:
        class_id, found = class_of[class_dir.name], 0
        for path in sorted(class_dir.rglob("*")):
            if any(part.startswith(HIDDEN_PREFIX) for part in path.relative_to(class_dir).parts):
                skipped["hidden"] += path.is_file()
            elif not path.is_file():
                continue
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped["without an image suffix"] += 1
            else:
                match = pattern.search(path.name) if pattern else None
                track = match.group(1) if match else path.stem
                records.append(RawRecord(path=str(path.relative_to(root)), class_id=class_id, track=track))
                found += 1
        if not found:
            empty.append(class_dir)
    if not records:
        raise FileNotFoundError(
            f"data.folder.path: no images with suffixes {sorted(IMAGE_SUFFIXES)} under {root}/<class>/"
        )
    _check_targets(root, classes, class_of, empty)
    if empty:
        log.warning("folder %s: skipped %d folders with no images: %s", root, len(empty), [p.name for p in empty])
    if skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        log.warning("folder %s: skipped %d files: %s", root, sum(skipped.values()), reasons)
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
