"""`signflow predict` on awkward inputs: each file gets its own result, nothing hangs, exit codes as documented.

Exit codes: 0 every input classified, 1 some failed, 2 usage. Tests run as root,
so nothing here relies on permission bits. Already covered in tests/commands/test_predict.py
(not repeated): a directory with no images and missing, empty, non-image,
truncated and oversized files (``test_bad_inputs_get_errors_and_the_rest_still_run``,
exit 1), all fine (``test_table_has_one_row_per_file``, exit 0), usage errors
(``test_usage_errors_exit_2``) and refused models (``test_refused_checkpoint_exits_2``).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from signflow.cli import EXIT_FILES_FAILED, EXIT_OK, main
from signflow.serving import batch as predict

from tiny_models import FAVOURED, tiny_checkpoint

N_MANY = 3_000  # files in one directory (some nested)
SIDE = 16  # px: above ImageLimits' minimum side, tiny to write and decode
HANG_LIMIT = 60  # seconds: a predict call that takes longer is taken to hang
DEV_NULL = Path("/dev/null")
LOOP_ERROR = "cannot read: Too many levels of symbolic links"


@pytest.fixture(scope="module")
def checkpoint(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_predict's tiny checkpoint, its backbone seeing the 32 px images as they are.

    The default linear strategy upsamples to model.linear.input_size (128 px), which
    made 3,000 images take 50 s on 2 cores instead of about one.
    """
    params = tmp_path_factory.mktemp("params")
    config = yaml.safe_load((repo_root / "params.yaml").read_text())
    config["model"]["linear"] = {"input_size": 0, "pooled_blocks": 0}
    (params / "params.yaml").write_text(yaml.safe_dump(config))
    return tiny_checkpoint(params, tmp_path_factory.mktemp("model") / "best.pt", FAVOURED)


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


@contextmanager
def no_hang(seconds: int = HANG_LIMIT) -> Iterator[None]:
    """Fail (instead of blocking the suite) if the body takes longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"predict still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _predict(capsys: pytest.CaptureFixture[str], checkpoint: Path, *inputs: str | Path) -> tuple[int, list[dict]]:
    with no_hang():
        code = main(["predict", *map(str, inputs), "--model", str(checkpoint), "--threshold", "0", "--json"])
    return code, json.loads(capsys.readouterr().out)


def _by_path(results: list[dict]) -> dict[str, dict]:
    paths = [r["path"] for r in results]
    assert len(paths) == len(set(paths)), "an input got more than one result"
    return {r["path"]: r for r in results}


def test_thousands_of_files_each_classified_once(capsys, checkpoint, png_bytes, tmp_path):
    root = tmp_path / "many"
    files = [root / (f"sub{i % 3}" if i % 2 else "") / f"{i:05d}.png" for i in range(N_MANY)]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes)
    code, results = _predict(capsys, checkpoint, root)
    assert code == EXIT_OK
    assert [r["path"] for r in results] == sorted(map(str, files))  # one result each, stable order
    assert all(r["prediction"] == FAVOURED for r in results)


def test_spaces_and_non_ascii_names(capsys, checkpoint, png_bytes, tmp_path):
    folder = tmp_path / "my photos" / "Straße Ünïcødé"
    folder.mkdir(parents=True)
    names = ["with space.png", "stop é.png", "знак.png", "標識 1.png", " leading space.png", "emoji 🚦.png"]
    files = [folder / name for name in names]
    undecodable = folder / os.fsdecode(b"latin1 \xe9t\xe9.png")  # not UTF-8: a surrogate-escaped str
    for path in [*files, undecodable]:
        path.write_bytes(png_bytes)
    code, results = _predict(capsys, checkpoint, folder, files[0])  # named twice: one result
    assert code == EXIT_OK
    assert sorted(_by_path(results)) == sorted(map(str, [*files, undecodable]))
    assert all(r["prediction"] == FAVOURED for r in results)
    # The table too: printing a name that is not UTF-8 used to raise UnicodeEncodeError.
    with no_hang():
        assert main(["predict", str(folder), "--model", str(checkpoint), "--threshold", "0"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(sum(line.startswith(str(path) + " ") for line in out.splitlines()) == 1 for path in files)
    assert str(folder / "latin1 \\xe9t\\xe9.png") in out
    assert out.strip().splitlines()[-1] == f"{len(files) + 1} classified, 0 failed"


def test_symlink_loops_neither_hang_nor_crash(capsys, checkpoint, png_bytes, tmp_path):
    root = tmp_path / "loops"
    (root / "sub").mkdir(parents=True)
    (root / "good.png").write_bytes(png_bytes)
    (root / "sub" / "inner.png").write_bytes(png_bytes)
    (root / "self.png").symlink_to("self.png")  # a link to itself
    (root / "a.png").symlink_to("b.png")  # two links to each other
    (root / "b.png").symlink_to("a.png")
    (root / "sub" / "up").symlink_to("..")  # a directory cycle
    (root / "sub" / "again").symlink_to(root)
    code, results = _predict(capsys, checkpoint, root)
    assert code == EXIT_OK  # the loops are not images: skipped, the cycle not followed
    assert [r["path"] for r in results] == [str(root / "good.png"), str(root / "sub" / "inner.png")]
    # Named explicitly, a loop is its own failed result (Path.resolve() raised RuntimeError here).
    code, results = _predict(capsys, checkpoint, root / "self.png", root / "a.png", root / "good.png")
    assert code == EXIT_FILES_FAILED
    by_path = _by_path(results)
    assert by_path[str(root / "self.png")]["error"] == LOOP_ERROR
    assert by_path[str(root / "a.png")]["error"] == LOOP_ERROR
    assert by_path[str(root / "good.png")]["prediction"] == FAVOURED


def test_file_vanishing_between_listing_and_reading(capsys, monkeypatch, checkpoint, png_bytes, tmp_path):
    root = tmp_path / "vanishing"
    root.mkdir()
    files = [root / f"{i}.png" for i in range(4)]
    for path in files:
        path.write_bytes(png_bytes)
    listed = predict.collect_inputs

    def collect_then_delete(paths):
        found = listed(paths)
        files[1].unlink()  # gone after listing, before decoding
        files[2].unlink()
        files[2].mkdir()  # ... or replaced by a directory
        return found

    monkeypatch.setattr(predict, "collect_inputs", collect_then_delete)
    code, results = _predict(capsys, checkpoint, root)
    assert code == EXIT_FILES_FAILED
    assert [r["path"] for r in results] == list(map(str, files))
    assert results[1] == {"path": str(files[1]), "error": "no such file or directory"}
    assert results[2]["error"].startswith("directory with no images")
    assert results[0]["prediction"] == results[3]["prediction"] == FAVOURED


def test_fifo_and_device_are_refused_without_being_opened(capsys, checkpoint, png_bytes, tmp_path):
    root = tmp_path / "special"
    root.mkdir()
    (root / "good.png").write_bytes(png_bytes)
    fifo = root / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: never
    code, results = _predict(capsys, checkpoint, root)
    assert code == EXIT_OK  # a directory search keeps regular files only
    assert [r["path"] for r in results] == [str(root / "good.png")]
    code, results = _predict(capsys, checkpoint, fifo, DEV_NULL, root / "good.png")
    assert code == EXIT_FILES_FAILED
    by_path = _by_path(results)
    assert by_path[str(fifo)] == {"path": str(fifo), "error": "not a regular file (a FIFO)"}
    assert by_path[str(DEV_NULL)] == {"path": str(DEV_NULL), "error": "not a regular file (a character device)"}
    assert by_path[str(root / "good.png")]["prediction"] == FAVOURED


def test_empty_directories_each_get_a_result(capsys, checkpoint, png_bytes, tmp_path):
    empty, text_only, good = tmp_path / "empty", tmp_path / "text_only", tmp_path / "good.png"
    empty.mkdir()
    text_only.mkdir()
    (text_only / ".hidden.txt").write_text("no image here")
    good.write_bytes(png_bytes)
    code, results = _predict(capsys, checkpoint, empty)
    assert code == EXIT_FILES_FAILED  # nothing classified is a failure, not a usage error
    assert [r["path"] for r in results] == [str(empty)] and results[0]["error"].startswith("directory with no images")
    code, results = _predict(capsys, checkpoint, empty, text_only, good)
    assert code == EXIT_FILES_FAILED
    assert [("error" in r) for r in results] == [True, True, False]
