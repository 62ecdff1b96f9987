"""Disk full while writing each kind of output: the previous good output survives byte for byte, no
temporary is left behind, and the error names the output (not the temporary).

Two faults per output: ``enospc`` patches the write to fail part-way with
ENOSPC (as a full disk does), ``size_limit`` is a real kernel fault, RLIMIT_FSIZE
(EFBIG past the limit, in torch's and numpy's C writers too). The report is
built with its figures replaced by one large file, since only its folder write
matters here.
"""

from __future__ import annotations

import errno
import os
import pathlib
import resource
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from signflow.data import arrays
from signflow.data.manifest import to_frame
from signflow.data.records import RawRecord
from signflow.evaluation import report
from signflow.files import write_json, write_text
from signflow.model import checkpoint

KIB = 1024
SIZE_LIMIT = 64 * KIB  # RLIMIT_FSIZE: a write past this offset fails with EFBIG
BIG = 300 * KIB  # every output written here is larger than the limit
N_IMAGES = 32
SIDE = 32  # N_IMAGES x SIDE x SIDE x 3 = 96 KiB of pixels


@contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """Files of this process cannot grow past ``nbytes`` (SIGXFSZ ignored, so the write fails with EFBIG)."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _half_then_enospc(write: Callable) -> Callable:
    """A Path.write_text / write_bytes that writes half of its data, then finds the disk full."""

    def partial(self: Path, data, *args, **kwargs):
        write(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    return partial


def _patch_path_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pathlib.Path, "write_text", _half_then_enospc(pathlib.Path.write_text))
    monkeypatch.setattr(pathlib.Path, "write_bytes", _half_then_enospc(pathlib.Path.write_bytes))


class _FullAfter:
    """A binary file whose writes past ``budget`` bytes fail with ENOSPC, like a disk that fills up."""

    def __init__(self, fh, budget: int) -> None:
        self._fh, self._left = fh, budget

    def write(self, data) -> int:
        if len(data) > self._left:
            self._fh.write(bytes(data)[: self._left])
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def __enter__(self) -> _FullAfter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


# ------------------------------------------------------------------ the outputs


@dataclass(frozen=True)
class Output:
    """How to write version ``v`` of one output under ``root``, which path it is, and how to fill the disk."""

    write: Callable[[Path, int], None]
    named: Callable[[Path], Path]  # the path the error must name
    enospc: Callable[[pytest.MonkeyPatch], None]


def _write_checkpoint(root: Path, version: int) -> None:
    checkpoint.save_checkpoint(root / "best.pt", {"model": {"w": torch.full((BIG // 4,), float(version))}})


def _checkpoint_enospc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "open", lambda path, mode: _FullAfter(open(path, mode), SIZE_LIMIT),
                        raising=False)


def _split(version: int) -> tuple[pd.DataFrame, np.ndarray]:
    records = [RawRecord(path=f"14/{i:05d}.png", class_id="14", track=f"{version:05d}") for i in range(N_IMAGES)]
    return to_frame(records, "stop", 0, "target"), np.full((N_IMAGES, SIDE, SIDE, 3), version, dtype=np.uint8)


def _write_arrays(root: Path, version: int) -> None:
    arrays.write_split(root, "train", *_split(version))


def _numpy_enospc(monkeypatch: pytest.MonkeyPatch) -> None:
    def save(file, array, *args, **kwargs) -> None:
        with open(file, "wb") as fh:
            fh.write(np.asarray(array).tobytes()[: SIZE_LIMIT])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(arrays.np, "save", save)


def _manifest_enospc(monkeypatch: pytest.MonkeyPatch) -> None:
    def to_csv(self, path, *args, **kwargs) -> None:
        Path(path).write_text("path,class_id\n")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)


def _write_arrays_streamed(root: Path, version: int) -> None:
    frame, images = _split(version)

    def fill(out: np.ndarray) -> None:
        out[:] = images

    arrays.write_split_streamed(root, "train", frame, SIDE, fill)


def _fallocate_enospc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse file is made on a full disk; only reserving its blocks finds out (else: SIGBUS on the first page)."""

    def posix_fallocate(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(arrays.os, "posix_fallocate", posix_fallocate)


def _write_report(root: Path, version: int) -> None:
    """The report stage's folder write (report.build_report), its figures one big file."""

    def draw_figures(inputs: object, out_dir: Path) -> dict[str, str]:
        (out_dir / "figure.png").write_bytes(bytes([version]) * BIG)
        return {}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "_draw_figures", draw_figures)
        patch.setattr(report, "render_markdown", lambda inputs, notes: f"# report {version}\n")
        report.build_report(None, root / "pipeline")


OUTPUTS = {
    "checkpoint": Output(_write_checkpoint, lambda root: root / "best.pt", _checkpoint_enospc),
    "arrays": Output(_write_arrays, lambda root: root / "train.npy", _numpy_enospc),
    "arrays_manifest": Output(_write_arrays, lambda root: root / "train.csv", _manifest_enospc),
    "arrays_streamed": Output(_write_arrays_streamed, lambda root: root / "train.npy", _fallocate_enospc),
    "json": Output(lambda root, v: write_json(root / "metrics.json", {"values": [v] * (BIG // 4)}),
                   lambda root: root / "metrics.json", _patch_path_writes),
    "text": Output(lambda root, v: write_text(root / "report.txt", f"line {v}\n" * (BIG // 8)),
                   lambda root: root / "report.txt", _patch_path_writes),
    "report": Output(_write_report, lambda root: root / "pipeline", _patch_path_writes),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file and folder under ``root`` (temporaries included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("fault", ["enospc", "size_limit"])
@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_disk_full_keeps_the_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                                            fault: str) -> None:
    output = OUTPUTS[kind]
    root = tmp_path / "out"
    output.write(root, 1)
    before = _snapshot(root)
    if fault == "enospc":
        output.enospc(monkeypatch)
        with pytest.raises(OSError) as info:
            output.write(root, 2)
        assert info.value.errno == errno.ENOSPC
    else:
        with file_size_limit(SIZE_LIMIT), pytest.raises(OSError) as info:
            output.write(root, 2)
        assert info.value.errno in (errno.EFBIG, None)  # None: numpy's "N requested and M written"
    assert _snapshot(root) == before  # the previous output byte for byte, and no temporary left
    message = str(info.value)
    assert str(output.named(root)) in message and ".tmp" not in message
    monkeypatch.undo()
    output.write(root, 2)  # space again: the next run just works
    assert _snapshot(root) != before


def test_a_killed_writes_temporary_is_removed_by_the_next_write_of_that_path(tmp_path: Path) -> None:
    """SIGKILL mid-write leaves `.name.XXXX.tmp/`; the next write of the same path removes it, no other."""
    target = tmp_path / "last.pt"
    left_by_kill = tmp_path / ".last.pt.abc123.tmp"
    (left_by_kill / "last.pt").parent.mkdir()
    (left_by_kill / "last.pt").write_bytes(b"half a checkpoint")
    other = tmp_path / ".best.pt.def456.tmp"  # another output's temporary: not this write's business
    other.mkdir()
    write_text(target, "new")
    assert target.read_text() == "new"
    assert not left_by_kill.exists() and other.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.pt.def456.tmp", "last.pt"]
