"""The data source's external inputs as one small, byte-stable fingerprint, which ``download`` depends on.

DVC re-runs a stage when a declared dependency changes, and it sees only the
project: a user's folder (``data.folder.path``) or a mirror file
(``data.gtsrb.url`` on disk with ``md5: ''``) lives outside it, so an added or
fixed image left ``download`` "didn't change". The always-run ``fingerprint``
stage writes this fingerprint (in git) and ``download`` lists it as a dep.
What identifies each input (see docs/data.md, "External data is a dependency"):

- ``folder``: every file the source reads (``scan_folder``: hidden files,
  non-images and files outside a class folder are not data) by relative path,
  size and ``mtime_ns``, hashed into one digest. A stat per file, no read: the
  stage runs on every ``dvc repro``. Size and modification time are what DVC's
  own state cache and make trust; an edit, even one keeping the size, sets a
  new mtime. A false alarm (``touch``, a copy without times) costs one
  ``download`` run, whose shards come out byte-identical, so nothing after it runs.
- ``gtsrb``: an archive with an md5 is that md5 (``fetch`` checks it); a local
  file without one, its size and ``mtime_ns``; an http(s) URL without one, only
  the URL (a change on the server cannot be seen: warned).
- ``synthetic``: nothing external; its params are ``download``'s deps already.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from signflow.config import ConfigError, DataConfig, check_choice
from signflow.data.fetch import local_source
from signflow.files import write_text

log = logging.getLogger(__name__)

Input = dict[str, Any]  # one external input: the params key naming it, and what identifies its content
InputsFn = Callable[[DataConfig], list[Input]]
DIGEST = "sha256"  # of the folder listing; any stable hash would do, this one is in hashlib everywhere


class MissingInputError(ConfigError):
    """An external input that params.yaml names is not on this machine."""


def folder_listing(root: Path) -> Input:
    """``files``, ``bytes`` and the digest of the sorted (path, size, mtime_ns) list of what the folder source reads."""
    from signflow.data.sources.folder import scan_folder  # lazy: only the folder source pays for its imports

    rows, depth = [], len(root.parts)
    for files in scan_folder(root).images.values():
        for path in files:
            stat = path.stat()  # follows a symlink: the file the source decodes
            rows.append(("/".join(path.parts[depth:]), stat.st_size, stat.st_mtime_ns))  # relative, posix
    digest = hashlib.new(DIGEST)
    for relative, size, mtime_ns in sorted(rows):
        digest.update(os.fsencode(relative) + f"\0{size}\0{mtime_ns}\n".encode())
    return {"files": len(rows), "bytes": sum(size for _, size, _ in rows), DIGEST: digest.hexdigest()}


def archive_input(key: str, url: str, md5: str) -> Input:
    """What identifies the archive ``key`` names: its md5 if given, else a local file's size and mtime, else its URL."""
    if md5:
        return {"key": key, "url": url, "md5": md5.lower()}
    local = local_source(url)
    if local is None:
        log.warning("%s=%s has no md5, so a change of the file on the server cannot be seen and does not re-run "
                    "download; set its md5 to pin the file", key, url)
        return {"key": key, "url": url}
    if not local.is_file():
        raise MissingInputError(f"{key}: {local} does not exist or is not a file; point it at the archive")
    stat = local.stat()
    return {"key": key, "url": url, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _no_inputs(cfg: DataConfig) -> list[Input]:
    return []


def _gtsrb_inputs(cfg: DataConfig) -> list[Input]:
    g = cfg.gtsrb
    return [archive_input(f"data.gtsrb.{url}", getattr(g, url), getattr(g, md5)) for url, md5 in g.archive_keys]


def _folder_inputs(cfg: DataConfig) -> list[Input]:
    root = Path(cfg.folder.path).expanduser()
    if not root.is_dir():
        raise MissingInputError(f"data.folder.path: {root} is not a directory; point it at your image folder")
    # The path as configured, not resolved: the same folder gives the same fingerprint on every machine.
    return [{"key": "data.folder.path", "path": cfg.folder.path, **folder_listing(root)}]


# Per data.source (the names of signflow.data.raw.DATA_SOURCES; a test keeps the two equal): its external inputs.
SOURCE_INPUTS: MappingProxyType[str, InputsFn] = MappingProxyType(
    {"synthetic": _no_inputs, "gtsrb": _gtsrb_inputs, "folder": _folder_inputs}
)


def source_fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """``{"source": name, "inputs": [...]}`` for ``cfg``; raises ``MissingInputError`` if an input is absent."""
    check_choice("data.source", cfg.source, SOURCE_INPUTS)
    return {"source": cfg.source, "inputs": SOURCE_INPUTS[cfg.source](cfg)}


def render(fingerprint: dict[str, Any]) -> str:
    """The file's bytes: sorted keys, fixed indent, so the same inputs always hash the same for DVC."""
    return json.dumps(fingerprint, indent=2, sort_keys=True) + "\n"


def update_fingerprint(cfg: DataConfig, path: Path) -> bool:
    """Write ``cfg``'s fingerprint to ``path`` (atomically) if it differs from the file; True if it did.

    An input missing on this machine (a clone without the user's folder, a queued
    experiment's copy where a relative path leads nowhere) keeps the previous file of
    the same source, with a warning: ``download`` then keeps ``data/raw`` as DVC has it,
    and fails naming the input if anything else makes it run. Without one it fails here.
    """
    previous = path.read_text() if path.is_file() else None
    try:
        current = source_fingerprint(cfg)
    except MissingInputError as err:
        if _parse(previous).get("source") != cfg.source:
            raise
        log.warning("%s; kept the previous %s, so download keeps data/raw as DVC has it", err, path)
        return False
    text = render(current)
    if text == previous:
        log.info("%s source: %d external inputs, unchanged", cfg.source, len(current["inputs"]))
        return False
    for line in describe_change(_parse(previous), current):
        log.info("%s source: %s", cfg.source, line)
    write_text(path, text)
    log.info("%s source: wrote %s (%d external inputs), a dependency of download", cfg.source, path,
             len(current["inputs"]))
    return True


def _parse(text: str | None) -> dict[str, Any]:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}  # a hand-edited or truncated file: replaced, and every input reads as new


def describe_change(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per input that is new or changed since ``previous`` (``{}``: none), for the stage's log."""
    before = {entry["key"]: entry for entry in previous.get("inputs", [])}
    lines = []
    for entry in current["inputs"]:
        old = before.get(entry["key"])
        if old is None or previous.get("source") != current["source"]:
            lines.append(f"{entry['key']}: first fingerprint, {_summary(entry)}")
            continue
        changed = [f"{name} {old.get(name)} -> {value}" for name, value in entry.items()
                   if name != DIGEST and old.get(name) != value]
        if changed:
            lines.append(f"{entry['key']} changed: {', '.join(changed)}")
        elif old != entry:
            lines.append(f"{entry['key']} changed: the same count and size, other files or modification times")
    return lines


def _summary(entry: Input) -> str:
    shown = {name: value for name, value in entry.items() if name not in ("key", DIGEST)}
    return ", ".join(f"{name} {value}" for name, value in shown.items())
