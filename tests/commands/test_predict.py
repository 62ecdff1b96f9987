"""`signflow predict`: real GTSRB images through a tiny checkpoint, broken inputs, refused checkpoints.

The checkpoint is a freshly built simple_cnn at 32 px (no training): its head
bias is pushed towards one class, so which class wins, and with what
probability, is known without training while probabilities still vary a little
per image (so batch-versus-single comparisons mean something). The ONNX model
is that checkpoint exported by ``signflow.serving.export.export_onnx``, as the export
stage does; ``--backend onnx`` must give the same answers without importing
torch or anything else heavy.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tomllib
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from signflow.catalog import UNKNOWN_NAME
from signflow.cli import COMMANDS, EXIT_FILES_FAILED, EXIT_OK, EXIT_USAGE, main
from signflow.commands import predict as predict_command
from signflow.commands.predict import DEFAULT_MODELS
from signflow.evaluation import openset
from signflow.model.inference import load_model
from signflow.serving import batch as predict
from signflow.serving.predictor import list_backends, load_predictor, sidecar_path

from tiny_models import FAVOURED, IMAGE_SIZE, run_checking_imports, tiny_checkpoint, tiny_onnx

N_IMAGES = 10
N_NESTED = 3  # of them, in a sub-folder (directories are searched recursively)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def checkpoint(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(repo_root, tmp_path_factory.mktemp("model") / "best.pt", FAVOURED)


@pytest.fixture(scope="module")
def onnx_model(checkpoint: Path) -> Path:
    """The checkpoint exported to ONNX (sidecar threshold 0: nothing rejected)."""
    return tiny_onnx(checkpoint, checkpoint.parent / "onnx" / "model.onnx")


@pytest.fixture(scope="module")
def image_dir(shared_gtsrb_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N_IMAGES real GTSRB .ppm files from different classes, some in a sub-folder, plus a non-image."""
    root = tmp_path_factory.mktemp("images")
    with zipfile.ZipFile(shared_gtsrb_zip) as archive:
        names = [n for n in archive.namelist() if n.endswith(".ppm")]
        step = len(names) // N_IMAGES
        for i, name in enumerate(names[::step][:N_IMAGES]):
            folder = root / "nested" if i < N_NESTED else root
            folder.mkdir(exist_ok=True)
            (folder / f"{Path(name).parent.name}_{Path(name).name}").write_bytes(archive.read(name))
    (root / "notes.txt").write_text("not an image; skipped when a directory is searched")
    return root


@pytest.fixture(scope="module")
def image_files(image_dir: Path) -> list[Path]:
    files = sorted(image_dir.rglob("*.ppm"))
    assert len(files) == N_IMAGES
    return files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(bytes(64))) + _png_chunk(b"IEND", b""))


@pytest.fixture
def bad_inputs(tmp_path: Path) -> list[Path]:
    """One of each kind of unusable input."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("hello, I am not a PNG")
    ok, encoded = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    assert ok
    (bad / "truncated.png").write_bytes(encoded.tobytes()[: len(encoded) // 2])
    (bad / "huge.png").write_bytes(_png_claiming(50_000, 50_000))  # past Pillow's own bomb guard
    (bad / "big.png").write_bytes(_png_claiming(5_000, 5_000))  # past ImageLimits' default max side
    (bad / "no_images").mkdir()
    (bad / "no_images" / "readme.txt").write_text("nothing to classify here")
    return [bad / "empty.png", bad / "text.png", bad / "truncated.png", bad / "huge.png", bad / "big.png",
            bad / "no_images", bad / "missing.png"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[dict]]:
    code, out, _ = _run(capsys, *argv, "--json")
    return code, json.loads(out)


# ------------------------------------------------------------------ output formats


def test_table_has_one_row_per_file(capsys, checkpoint, image_dir, image_files):
    code, out, _ = _run(capsys, image_dir, "--model", checkpoint, "--threshold", "0")
    assert code == EXIT_OK
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["path", "prediction", "confidence"]
    assert len(lines) == 1 + N_IMAGES + 1  # header, rows, summary
    for path in image_files:
        assert sum(line.startswith(str(path) + " ") for line in lines) == 1
    assert all(FAVOURED in line for line in lines[1:-1])
    assert lines[-1] == f"{N_IMAGES} classified, 0 failed"


def test_json_schema(capsys, checkpoint, image_dir, image_files):
    code, results = _run_json(capsys, image_dir, "--model", checkpoint, "--threshold", "0", "--top-k", "2")
    assert code == EXIT_OK
    assert [r["path"] for r in results] == [str(p) for p in image_files]
    class_names = load_model(checkpoint).class_names
    assert UNKNOWN_NAME in class_names
    for r in results:
        assert set(r) == {"path", "prediction", "confidence", "probabilities", "top_k"}
        assert list(r["probabilities"]) == class_names
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["confidence"] == max(r["probabilities"].values())
        assert r["prediction"] == FAVOURED
        assert [name for name, _ in r["top_k"]][0] == FAVOURED and len(r["top_k"]) == 2
        assert all(r["probabilities"][name] == p for name, p in r["top_k"])


def test_plot_writes_png(capsys, tmp_path, checkpoint, image_files, bad_inputs):
    out_png = tmp_path / "plots" / "probs.png"
    code, _, _ = _run(capsys, *image_files[:4], bad_inputs[0], "--model", checkpoint, "--plot", out_png)
    assert code == EXIT_FILES_FAILED  # the failed file is left out of the plot, not fatal to it
    assert out_png.read_bytes().startswith(PNG_SIGNATURE)
    assert not [p for p in out_png.parent.iterdir() if p != out_png]  # no temporary left behind


def test_list_backbones(capsys):
    assert main(["list-backbones"]) == EXIT_OK
    assert "simple_cnn" in capsys.readouterr().out.split()


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs_get_errors_and_the_rest_still_run(capsys, checkpoint, image_files, bad_inputs):
    code, results = _run_json(capsys, image_files[0], *bad_inputs, image_files[1], "--model", checkpoint)
    assert code == EXIT_FILES_FAILED
    assert [r["path"] for r in results] == [str(p) for p in [image_files[0], *bad_inputs, image_files[1]]]
    errors = {Path(r["path"]).name: r["error"] for r in results if "error" in r}
    assert set(errors) == {p.name for p in bad_inputs}
    assert errors["empty.png"] == "empty file"
    assert errors["text.png"] == "not an image"
    assert "truncated" in errors["truncated.png"]
    assert "decompression bomb" in errors["huge.png"]
    assert errors["big.png"] == "size 5000x5000 outside [8, 4096] px"
    assert errors["no_images"].startswith("directory with no images")
    assert errors["missing.png"] == "no such file or directory"
    assert all(set(r) == {"path", "error"} for r in results[1:-1])
    assert results[0]["prediction"] == results[-1]["prediction"] == FAVOURED


def test_table_marks_failed_files(capsys, checkpoint, image_files, bad_inputs):
    code, out, _ = _run(capsys, image_files[0], bad_inputs[1], "--model", checkpoint)
    assert code == EXIT_FILES_FAILED
    failed_line = next(line for line in out.splitlines() if line.startswith(str(bad_inputs[1])))
    assert predict_command.TABLE_FAILED in failed_line and "not an image" in failed_line
    assert out.strip().splitlines()[-1] == "1 classified, 1 failed"


def _malicious_pickle(marker: Path) -> object:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return Payload()


@pytest.mark.parametrize("kind", ["random_bytes", "custom_class", "wrong_shapes", "missing"])
def test_refused_checkpoint_exits_2(capsys, repo_root, tmp_path, image_files, kind):
    path, marker = tmp_path / "tampered.pt", tmp_path / "code_ran"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "custom_class":
        torch.save({"model": _malicious_pickle(marker)}, path)
    elif kind == "wrong_shapes":
        state = torch.load(tiny_checkpoint(repo_root, path, FAVOURED), weights_only=True)
        torch.save({**state, "num_classes": state["num_classes"] + 1}, path)
    code, out, err = _run(capsys, image_files[0], "--model", path)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("signflow: error: ") and str(path) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()  # the pickled command never ran


def test_usage_errors_exit_2(capsys, checkpoint, image_files):
    assert main([]) == EXIT_USAGE
    assert main(["predict", str(image_files[0]), "--top-k", "0"]) == EXIT_USAGE
    assert main(["predict", str(image_files[0]), "--model", str(checkpoint), "--threshold", "1.5"]) == EXIT_USAGE
    assert "[0, 1]" in capsys.readouterr().err


# ------------------------------------------------------------------ thresholds


def test_high_threshold_turns_predictions_unknown(capsys, checkpoint, image_files):
    _, low = _run_json(capsys, *image_files, "--model", checkpoint, "--threshold", "0.5")
    _, high = _run_json(capsys, *image_files, "--model", checkpoint, "--threshold", "0.99")
    assert {r["prediction"] for r in low} == {FAVOURED}
    assert {r["prediction"] for r in high} == {UNKNOWN_NAME}
    # Rejection changes the label only: the probabilities stay the model's.
    assert [r["probabilities"] for r in low] == [r["probabilities"] for r in high]


def test_unknown_class_winning_gives_unknown(capsys, repo_root, tmp_path, image_files):
    model = tiny_checkpoint(repo_root, tmp_path / "unknown.pt", UNKNOWN_NAME)
    _, results = _run_json(capsys, *image_files[:3], "--model", model, "--threshold", "0")
    assert {r["prediction"] for r in results} == {UNKNOWN_NAME}


def test_threshold_auto_reads_evaluate_metrics(capsys, tmp_path, checkpoint, image_files, caplog):
    metrics = tmp_path / "metrics" / "evaluate.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"openset.threshold": 0.99, "accuracy": 0.5}))
    _, rejected = _run_json(capsys, *image_files[:3], "--model", checkpoint, "--metrics", metrics)
    assert {r["prediction"] for r in rejected} == {UNKNOWN_NAME}
    _, accepted = _run_json(capsys, *image_files[:3], "--model", checkpoint, "--metrics", tmp_path / "absent.json")
    assert {r["prediction"] for r in accepted} == {FAVOURED}
    assert "absent.json not found" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"), [("0", 0.0), ("0.73", 0.73), ("1", 1.0), ("auto", 0.42), (" AUTO ", 0.42)]
)
def test_resolve_threshold(tmp_path, value, expected):
    metrics = tmp_path / "evaluate.json"
    metrics.write_text(json.dumps({"openset": {"threshold": 0.42}}))  # nested works as well as flat
    assert openset.resolve_threshold(value, metrics) == expected


@pytest.mark.parametrize("value", ["-0.1", "1.01", "high", ""])
def test_resolve_threshold_refuses(tmp_path, value):
    with pytest.raises(ValueError, match="threshold"):
        openset.resolve_threshold(value, tmp_path / "evaluate.json")


# ------------------------------------------------------------------ fast path = plain path


def test_collect_inputs(image_dir, image_files, bad_inputs):
    no_images = bad_inputs[5]
    got = predict.collect_inputs([image_dir, image_files[0], no_images, bad_inputs[1]])
    assert got == [*image_files, no_images, bad_inputs[1]]  # sorted, deduplicated, .txt skipped


def test_pool_decode_equals_serial(monkeypatch, image_files, bad_inputs):
    monkeypatch.setattr(predict, "POOL_MIN_FILES", 2)
    paths = [*image_files, *bad_inputs]
    serial = predict.decode_many(paths, IMAGE_SIZE, workers=1)
    pooled = predict.decode_many(paths, IMAGE_SIZE, workers=2)
    assert serial[1] == pooled[1] and sum(e is None for e in serial[1]) == N_IMAGES
    assert serial[0].shape == (N_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_array_equal(serial[0], pooled[0])


def test_batch_results_equal_single_file_results(monkeypatch, checkpoint, image_files, bad_inputs):
    monkeypatch.setattr(predict, "POOL_MIN_FILES", 2)
    monkeypatch.setattr(predict, "PREDICT_BLOCK", 4)  # several blocks through one pool
    predictor = load_predictor(checkpoint)
    paths = [*image_files, bad_inputs[1]]
    batched = predict.predict_files(predictor, paths, top_k=5, batch_size=3, workers=2)
    single = [predict.predict_files(predictor, [p], top_k=5, batch_size=1, workers=1)[0] for p in paths]
    assert [r["path"] for r in batched] == [r["path"] for r in single]
    for b, s in zip(batched, single, strict=True):
        assert b.keys() == s.keys()
        if "error" in b:
            assert b["error"] == s["error"]
            continue
        assert b["prediction"] == s["prediction"]
        np.testing.assert_allclose(list(b["probabilities"].values()), list(s["probabilities"].values()), atol=1e-6)


# ------------------------------------------------------------------ console script


def test_console_script(repo_root, checkpoint, image_files, bad_inputs):
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["signflow"] == "signflow.cli:main"
    script = Path(sys.executable).parent / "signflow"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "signflow"]
    args = ["predict", str(image_files[0]), str(bad_inputs[0]), "--model", str(checkpoint), "--json",
            "--threshold", "0"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, cwd=repo_root)
    assert done.returncode == EXIT_FILES_FAILED, done.stderr
    results = json.loads(done.stdout)
    assert [("error" in r) for r in results] == [False, True]
    assert "1 of 2 files could not be classified" in done.stderr


# ------------------------------------------------------------------ ONNX backend


def test_onnx_backend_matches_torch(capsys, checkpoint, onnx_model, image_dir, image_files, bad_inputs):
    args = [image_dir, bad_inputs[1], "--threshold", "0", "--top-k", "5"]
    torch_code, by_torch = _run_json(capsys, *args, "--model", checkpoint)
    onnx_code, by_onnx = _run_json(capsys, *args, "--backend", "onnx", "--model", onnx_model)
    assert torch_code == onnx_code == EXIT_FILES_FAILED
    assert [r["path"] for r in by_onnx] == [r["path"] for r in by_torch] == [*map(str, image_files), str(bad_inputs[1])]
    assert by_onnx[-1] == by_torch[-1] == {"path": str(bad_inputs[1]), "error": "not an image"}
    for o, t in zip(by_onnx[:-1], by_torch[:-1], strict=True):
        assert o.keys() == t.keys() and o["prediction"] == t["prediction"] == FAVOURED
        assert [name for name, _ in o["top_k"]] == [name for name, _ in t["top_k"]]
        np.testing.assert_allclose(list(o["probabilities"].values()), list(t["probabilities"].values()), atol=1e-4)


def test_backend_follows_the_model_suffix(capsys, onnx_model, image_files):
    code, results = _run_json(capsys, image_files[0], "--model", onnx_model, "--threshold", "0")  # no --backend
    assert code == EXIT_OK and results[0]["prediction"] == FAVOURED


@pytest.mark.parametrize(("backend", "model", "message"), [
    ("torch", "onnx", "--backend torch cannot run"),
    ("onnx", "pt", "--backend onnx cannot run"),
    (None, "h5", "unknown model format '.h5'"),
])
def test_backend_model_mismatch_exits_2(capsys, tmp_path, checkpoint, onnx_model, image_files, backend, model, message):
    path = {"pt": checkpoint, "onnx": onnx_model, "h5": tmp_path / "model.h5"}[model]
    code, out, err = _run(capsys, image_files[0], "--model", path, *(["--backend", backend] if backend else []))
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("signflow: error: ") and message in err
    assert str(path) in err and len(err.strip().splitlines()) == 1


def test_default_model_per_backend(capsys, monkeypatch, tmp_path, onnx_model, image_files):
    assert set(DEFAULT_MODELS) == set(list_backends())
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, image_files[0])  # no --backend, no --model: torch, models/best.pt
    assert code == EXIT_USAGE and str(DEFAULT_MODELS["torch"]) in err
    target = tmp_path / DEFAULT_MODELS["onnx"]
    target.parent.mkdir(parents=True)
    target.write_bytes(onnx_model.read_bytes())
    sidecar_path(target).write_bytes(sidecar_path(onnx_model).read_bytes())
    code, results = _run_json(capsys, image_files[0], "--backend", "onnx", "--threshold", "0")
    assert code == EXIT_OK and results[0]["prediction"] == FAVOURED


def test_onnx_threshold_auto_reads_the_sidecar(capsys, tmp_path, checkpoint, image_files):
    strict = tiny_onnx(checkpoint, tmp_path / "strict.onnx", threshold=0.99)
    metrics = tmp_path / "evaluate.json"
    metrics.write_text(json.dumps({"openset.threshold": 0.0}))  # ignored: the sidecar decides for an .onnx model
    _, auto = _run_json(capsys, *image_files[:3], "--model", strict, "--metrics", metrics)
    assert {r["prediction"] for r in auto} == {UNKNOWN_NAME}
    _, explicit = _run_json(capsys, *image_files[:3], "--model", strict, "--threshold", "0")
    assert {r["prediction"] for r in explicit} == {FAVOURED}


@pytest.mark.parametrize("kind", ["no_sidecar", "sidecar_not_json", "sidecar_wrong_format", "onnx_random_bytes"])
def test_refused_onnx_model_exits_2(capsys, tmp_path, onnx_model, image_files, kind):
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096) if kind == "onnx_random_bytes" else onnx_model.read_bytes())
    sidecar = json.loads(sidecar_path(onnx_model).read_text())
    if kind == "sidecar_not_json":
        sidecar_path(path).write_text("{not json")
    elif kind == "sidecar_wrong_format":
        sidecar_path(path).write_text(json.dumps({**sidecar, "format": "something-else"}))
    elif kind == "onnx_random_bytes":
        sidecar_path(path).write_text(json.dumps(sidecar))
    code, out, err = _run(capsys, image_files[0], "--model", path)
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("signflow: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    named = path if kind == "onnx_random_bytes" else sidecar_path(path)
    assert str(named) in err


def test_onnx_predict_imports_nothing_heavy(repo_root, tmp_path, checkpoint, onnx_model, image_files, bad_inputs):
    """The console script's path, in a fresh process: no torch, sklearn, pandas, DVC, MLflow, matplotlib, yaml."""
    inputs = [*image_files[:4], bad_inputs[1]]
    code, out, err, heavy = run_checking_imports(
        "import sys; from signflow.cli import main; sys.exit(main())",
        "predict", "--backend", "onnx", "--model", onnx_model, "--json", *inputs, cwd=repo_root, tmp_path=tmp_path)
    assert code == EXIT_FILES_FAILED, err
    assert heavy == []
    by_onnx = json.loads(out)
    by_torch = predict.predict_files(load_predictor(checkpoint), inputs)
    assert [r.get("prediction") for r in by_onnx] == [r.get("prediction") for r in by_torch]
    assert [r.get("error") for r in by_onnx] == [None] * 4 + ["not an image"]


def test_help_lists_every_command_and_imports_none(repo_root, tmp_path):
    code, out, err, heavy = run_checking_imports(
        "import sys; from signflow.cli import main; main(['--help'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('signflow.'))\n"
        "print(loaded, file=sys.stderr)", cwd=repo_root, tmp_path=tmp_path)
    assert code == 0, err
    for name, command in COMMANDS.items():
        assert name in out and _squeezed(command.help) in _squeezed(out)
    assert heavy == []
    assert err.strip() == str(["signflow.cli", "signflow.logs"])


def _squeezed(text: str) -> str:
    """``text`` without whitespace: argparse re-wraps help lines (breaking at hyphens too)."""
    return "".join(text.split())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_resolves_and_has_help(capsys, name):
    assert main([name, "--help"]) == EXIT_OK
    assert _squeezed(COMMANDS[name].help) in _squeezed(capsys.readouterr().out)


def test_registry_help_matches_remote_description():
    from signflow.commands import remote
    assert COMMANDS["remote"].help == remote.DESCRIPTION
