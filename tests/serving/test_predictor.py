"""``signflow.load_predictor``: one API over a ``.pt`` checkpoint (PyTorch) and an ``.onnx`` export (onnxruntime).

The model is test_predict's tiny simple_cnn checkpoint (one class favoured, no
training) and its export by ``signflow.serving.export.export_onnx``; the images are
small random PNGs of several sizes, so resizing is exercised. Both backends
must give the same records for files and for arrays; the ONNX one must do it
without torch, also in a fresh virtualenv holding only ``signflow[predict]``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import signflow
from signflow.data.images import read_rgb
from signflow.serving.batch import ARRAY_NAME
from signflow.serving.predictor import (
    OnnxPredictor,
    Predictor,
    PredictorError,
    TorchPredictor,
    load_predictor,
    sidecar_path,
)

from conftest import write_image_folder
from tiny_models import FAVOURED, IMAGE_SIZE, run_checking_imports, tiny_checkpoint, tiny_onnx

PROBABILITY_TOLERANCE = 1e-4  # the export stage's own bar for ONNX vs PyTorch
RECORD_KEYS = {"path", "prediction", "confidence", "probabilities", "top_k"}
VENV_IMAGES = 4  # images classified in the fresh-virtualenv test


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"pt": the tiny checkpoint, "onnx": its export (sidecar threshold 0.0)}."""
    folder = tmp_path_factory.mktemp("models")
    checkpoint = tiny_checkpoint(repo_root, folder / "best.pt", FAVOURED)
    return {"pt": checkpoint, "onnx": tiny_onnx(checkpoint, folder / "model.onnx")}


@pytest.fixture(scope="module")
def predictors(models: dict[str, Path]) -> dict[str, Predictor]:
    return {kind: load_predictor(path) for kind, path in models.items()}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random PNGs, 20-60 px (smaller and larger than the 32 px model), in three sub-folders."""
    return write_image_folder(tmp_path_factory.mktemp("images"), tracks=2, frames=2, sizes=(20, 60))


@pytest.fixture(scope="module")
def image_files(image_root: Path) -> list[Path]:
    return sorted(image_root.rglob("*.png"))


def _probs(records: list[dict]) -> np.ndarray:
    return np.array([list(r["probabilities"].values()) for r in records])


# ------------------------------------------------------------------ the two backends agree


def test_load_predictor_picks_the_backend_by_suffix(predictors):
    assert isinstance(predictors["pt"], TorchPredictor) and predictors["pt"].backend == "torch"
    assert isinstance(predictors["onnx"], OnnxPredictor) and predictors["onnx"].backend == "onnx"
    for predictor in predictors.values():
        assert predictor.image_size == IMAGE_SIZE and FAVOURED in predictor.class_names
    assert predictors["pt"].class_names == predictors["onnx"].class_names
    assert predictors["onnx"].metadata["format"] == "signflow-onnx"


def test_pt_and_onnx_agree_on_files_and_arrays(predictors, image_root, image_files):
    arrays = [read_rgb(path) for path in image_files]  # decoded as a file is: same pixels
    assert len({a.shape for a in arrays}) > 1  # several sizes: resizing is exercised
    by_files = {kind: p.predict(image_root, top_k=5) for kind, p in predictors.items()}
    by_arrays = {kind: p.predict(arrays, top_k=5) for kind, p in predictors.items()}
    for kind in predictors:
        assert [r["path"] for r in by_files[kind]] == [str(p) for p in image_files]
        assert [r["path"] for r in by_arrays[kind]] == [ARRAY_NAME.format(i) for i in range(len(arrays))]
        assert all(set(r) == RECORD_KEYS for r in by_files[kind] + by_arrays[kind])
        # An array is classified exactly as the file it was read from.
        np.testing.assert_array_equal(_probs(by_arrays[kind]), _probs(by_files[kind]))
        assert [r["prediction"] for r in by_arrays[kind]] == [r["prediction"] for r in by_files[kind]]
    for source in (by_files, by_arrays):
        assert [r["prediction"] for r in source["onnx"]] == [r["prediction"] for r in source["pt"]]
        np.testing.assert_allclose(_probs(source["onnx"]), _probs(source["pt"]), atol=PROBABILITY_TOLERANCE)
    assert {r["prediction"] for r in by_files["pt"]} == {FAVOURED}


def test_predict_images_returns_float32_probabilities(predictors):
    images = np.random.default_rng(0).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for predictor in predictors.values():
        probs = predictor.predict_images(images, batch_size=2)
        assert probs.shape == (3, len(predictor.class_names)) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert predictor.predict_images(images[:0]).shape == (0, len(predictor.class_names))
        with pytest.raises(ValueError, match=f"uint8 \\(N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3\\)"):
            predictor.predict_images(images[:, :16])
        with pytest.raises(ValueError, match="float32"):
            predictor.predict_images(images.astype(np.float32))


def test_arrays_mixed_with_paths_keep_input_order(predictors, image_root, image_files):
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, (2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)  # at the model size: used as is
    single = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    records = predictors["onnx"].predict([image_files[0], stack, image_root / "1", single, "missing.png"])
    names = [r["path"] for r in records]
    folder_files = [str(p) for p in image_files if p.parent.name == "1"]
    assert names == [str(image_files[0]), "<array 0>", "<array 1>", *folder_files, "<array 2>", "missing.png"]
    assert records[-1] == {"path": "missing.png", "error": "no such file or directory"}
    one_by_one = [predictors["onnx"].predict(image)[0] for image in stack]
    np.testing.assert_array_equal(_probs(records[1:3]), _probs(one_by_one))
    assert predictors["onnx"].predict(single)[0]["path"] == "<array 0>"  # one array alone: one record


def test_a_bad_array_gets_its_own_error(predictors):
    good = np.zeros((40, 40, 3), np.uint8)
    records = predictors["onnx"].predict([good, good.astype(np.float32), good[..., 0], good[:, :, :2], good])
    assert [("error" in r) for r in records] == [False, True, True, True, False]
    assert "uint8 RGB array" in records[1]["error"] and "float32" in records[1]["error"]
    assert "(40, 40)" in records[2]["error"]


def test_threshold_from_sidecar_or_argument(models, tmp_path):
    strict = tiny_onnx(models["pt"], tmp_path / "strict.onnx", threshold=0.99)
    assert load_predictor(strict).threshold == 0.99 and load_predictor(strict).stored_threshold == 0.99
    assert load_predictor(strict, threshold=0.2).threshold == 0.2
    assert load_predictor(models["pt"]).threshold == 0.0 and load_predictor(models["pt"]).stored_threshold is None
    image = np.zeros((32, 32, 3), np.uint8)
    assert load_predictor(strict).predict(image)[0]["prediction"] == "unknown"
    assert load_predictor(strict, threshold=0.0).predict(image)[0]["prediction"] == FAVOURED
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_predictor(strict, threshold=1.5)


def test_signflow_exports_load_predictor_lazily(repo_root, tmp_path, models):
    code, out, err, heavy = run_checking_imports(
        "import sys, signflow\n"
        "assert 'signflow.serving.predictor' not in sys.modules, 'import signflow loaded the predictor'\n"
        "import json, numpy as np\n"
        "p = signflow.load_predictor(sys.argv[1])\n"
        "print(json.dumps([p.backend, p.predict(np.zeros((48, 40, 3), np.uint8), top_k=1)]))",
        models["onnx"], cwd=repo_root, tmp_path=tmp_path)
    assert code == 0, err
    backend, records = json.loads(out)
    assert backend == "onnx" and records[0]["prediction"] == FAVOURED
    assert heavy == []
    assert signflow.load_predictor is load_predictor
    assert "load_predictor" in dir(signflow)
    with pytest.raises(AttributeError, match="no_such_name"):
        signflow.no_such_name  # noqa: B018


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("kind", ["pt", "onnx"])
def test_missing_model_file(tmp_path, kind):
    path = tmp_path / f"absent.{kind}"
    with pytest.raises(PredictorError, match=f"{path} does not exist"):
        load_predictor(path)


@pytest.mark.parametrize("name", ["model.h5", "model", "model.json"])
def test_wrong_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"weights")
    with pytest.raises(PredictorError, match="unknown model format.*expected .pt \\(torch\\) or .onnx \\(onnx\\)"):
        load_predictor(path)


def test_directory_with_no_images_and_non_image_file_get_error_records(predictors, tmp_path, image_files):
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    text = tmp_path / "photo.jpg"
    text.write_text("not a JPEG at all")
    for predictor in predictors.values():
        records = predictor.predict([empty, image_files[0], text])
        assert records[0] == {"path": str(empty), "error": "directory with no images"}
        assert records[1]["prediction"] == FAVOURED
        assert records[2] == {"path": str(text), "error": "not an image"}


@pytest.mark.parametrize(("kind", "message"), [
    ("no_sidecar", "not found: an ONNX model needs the sidecar"),
    ("not_json", "is not valid JSON"),
    ("wrong_format", "format is 'other'"),
    ("no_classes", "class_names must be a non-empty list"),
    ("float_input", "this signflow feeds"),
    ("wrong_size", "expected one input 'images' uint8 \\(batch, 64, 64, 3\\)"),
    ("fewer_classes", "expected an output 'probabilities' \\(batch, 2\\)"),
    ("corrupt_onnx", "cannot load ONNX model"),
])
def test_bad_onnx_model_is_refused_naming_the_file(models, tmp_path, kind, message):
    path = tmp_path / "model.onnx"
    shutil.copyfile(models["onnx"], path)
    sidecar = json.loads(sidecar_path(models["onnx"]).read_text())
    changed = {
        "wrong_format": {"format": "other"}, "no_classes": {"class_names": []},
        "float_input": {"input": {**sidecar["input"], "dtype": "float32"}}, "wrong_size": {"image_size": 64},
        "fewer_classes": {"class_names": sidecar["class_names"][:2]},
    }.get(kind, {})
    if kind == "not_json":
        sidecar_path(path).write_text("{")
    elif kind != "no_sidecar":
        sidecar_path(path).write_text(json.dumps({**sidecar, **changed}))
    if kind == "corrupt_onnx":
        path.write_bytes(b"\x00" * 100)
    with pytest.raises(PredictorError, match=message) as caught:
        load_predictor(path)
    named = path if kind in ("wrong_size", "fewer_classes", "corrupt_onnx") else sidecar_path(path)
    assert str(named) in str(caught.value) and "\n" not in str(caught.value)


def test_onnx_backend_refuses_cuda(models):
    with pytest.raises(PredictorError, match="runs on the CPU"):
        load_predictor(models["onnx"], device="cuda")


# ------------------------------------------------------------------ a fresh `pip install signflow[predict]`


def _pip_index_reachable(python: Path) -> bool:
    """Whether pip finds onnxruntime on a package index (PyPI or a configured mirror), downloading nothing."""
    done = subprocess.run([str(python), "-m", "pip", "index", "versions", "onnxruntime"],
                          capture_output=True, text=True, timeout=300)
    return done.returncode == 0 and "Available versions" in done.stdout


@pytest.mark.slow
def test_fresh_venv_with_predict_extra_classifies_without_torch(repo_root, tmp_path, models, image_files):
    """``pip install .[predict]`` alone (non-editable, no system site packages): ONNX prediction, and no torch."""
    project = tmp_path / "project"
    shutil.copytree(repo_root / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(repo_root / name, project / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    if not _pip_index_reachable(python):
        pytest.skip("pip cannot reach a package index from this machine")
    pins = ["-c", str(repo_root / "constraints.txt")] if (repo_root / "constraints.txt").is_file() else []
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{project}[predict]", *pins],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]

    inputs = image_files[:VENV_IMAGES]
    done = subprocess.run([str(venv / "bin" / "signflow"), "predict", "--backend", "onnx", "--model",
                           str(models["onnx"]), "--json", "--top-k", "2", *map(str, inputs)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    expected = load_predictor(models["pt"]).predict(inputs, top_k=2)
    assert [r["path"] for r in results] == [str(p) for p in inputs]
    assert [r["prediction"] for r in results] == [r["prediction"] for r in expected] == [FAVOURED] * VENV_IMAGES
    np.testing.assert_allclose(_probs(results), _probs(expected), atol=PROBABILITY_TOLERANCE)

    for module in ("torch", "yaml", "pandas", "mlflow", "dvc"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, f"{module} is installed"
    api = subprocess.run([str(python), "-c", "import signflow, numpy as np; "
                          f"print(signflow.load_predictor({str(models['onnx'])!r}).predict("
                          "np.zeros((30, 30, 3), np.uint8))[0]['prediction'])"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert api.returncode == 0 and api.stdout.strip() == FAVOURED, api.stderr
