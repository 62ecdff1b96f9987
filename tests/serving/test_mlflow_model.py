"""The MLflow model (``signflow.serving.mlflow_model``): ``signflow predict --json``'s answers through MLflow.

No pipeline: test_predictor's tiny simple_cnn (one class favoured, p ~0.8 on
every image) exported to an ONNX folder whose sidecar threshold rejects every
image, logged to a sqlite store and registered. The pyfunc must answer as
``Predictor.predict`` does on the same files and arrays, with the request's
threshold and top-k; a real ``mlflow models serve`` must answer a POST of
base64 JPEGs the same way; and the model must run on the code it carries, without torch.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

from signflow.catalog import UNKNOWN_NAME, unknown_index
from signflow.data.images import read_rgb
from signflow.evaluation.openset import max_softmax_score
from signflow.serving.batch import DEFAULT_TOP_K
from signflow.serving.mlflow_model import ARTIFACT, CODE_ARTIFACT, IMAGE_COLUMN, RESULT_COLUMNS, log_signflow_model
from signflow.serving.predictor import load_predictor, read_sidecar

from .mlflow_serve import post_json, serve_model
from tiny_models import FAVOURED, run_checking_imports, tiny_checkpoint, tiny_onnx

pytestmark = pytest.mark.slow

REGISTRY_NAME = "signflow-pyfunc"
MODEL_URI = f"models:/{REGISTRY_NAME}/1"
# Above every known-ness of the tiny model (~0.8): the sidecar's own threshold calls every image "unknown".
SIDECAR_THRESHOLD = 0.99
# Test images: (side x side, how drawn, file format); flat colours and noise give distinct known-ness scores.
IMAGE_SPECS = ((40, "noise", ".jpg"), (30, "white", ".jpg"), (56, "grey", ".jpg"), (20, "noise", ".png"),
               (48, "black", ".png"))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def onnx_dir(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported folder as the export stage writes it: model.onnx and its sidecar."""
    folder = tmp_path_factory.mktemp("export")
    checkpoint = tiny_checkpoint(repo_root, folder / "best.pt", FAVOURED)
    tiny_onnx(checkpoint, folder / "onnx" / "model.onnx", threshold=SIDECAR_THRESHOLD)
    return folder / "onnx"


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    fills = {"white": 255, "grey": 128, "black": 0}
    files = []
    for index, (side, kind, suffix) in enumerate(IMAGE_SPECS):
        image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8) if kind == "noise" \
            else np.full((side, side, 3), fills[kind], np.uint8)
        path = folder / f"{index}-{kind}{suffix}"
        assert cv2.imwrite(str(path), image)
        files.append(path)
    return files


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A sqlite store in a scratch folder (artifacts there too); the environment that points at it.

    MLflow's process-wide state is set here (a URI set by an earlier test in this
    process would win over the environment) and undone afterwards: the tracking
    URI (which it also exports), the working folder, and sys.path.
    """
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setattr(sys, "path", list(sys.path))
        mlflow.set_tracking_uri(uri)
        bin_dir = Path(sys.executable).parent  # mlflow and uvicorn, for `mlflow models serve`
        yield {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def logged(store: dict[str, str], onnx_dir: Path, image_files: list[Path]) -> ModelInfo:
    example = np.stack([cv2.resize(read_rgb(path), (24, 24)) for path in image_files[:2]])
    with mlflow.start_run():
        return log_signflow_model(onnx_dir, example_images=example, registry_name=REGISTRY_NAME,
                                  metadata=read_sidecar(onnx_dir / "model.onnx"))


@pytest.fixture(scope="module")
def model(logged: ModelInfo) -> mlflow.pyfunc.PyFuncModel:
    return mlflow.pyfunc.load_model(MODEL_URI)


# ------------------------------------------------------------------ helpers


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def expected(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``Predictor.predict``'s records as the MLflow model's rows: no "path", every column, None where unset."""
    return [{column: record.get(column) for column in RESULT_COLUMNS} for record in records]


def answers(frame: pd.DataFrame) -> list[dict[str, Any]]:
    assert list(frame.columns) == list(RESULT_COLUMNS)
    return frame.to_dict("records")


def known_ness(records: Sequence[dict[str, Any]]) -> np.ndarray:
    names = list(records[0]["probabilities"])
    probs = np.array([[r["probabilities"][name] for name in names] for r in records])
    return max_softmax_score(probs, unknown_index(names))


def split_threshold(records: Sequence[dict[str, Any]]) -> tuple[float, int, int]:
    """A threshold halfway between the least and the most known image; their positions."""
    scores = known_ness(records)
    low, high = int(scores.argmin()), int(scores.argmax())
    assert scores[high] - scores[low] > 1e-3  # apart enough for a threshold between them to be unambiguous
    return float(scores[low] + scores[high]) / 2, low, high


# ------------------------------------------------------------------ what is logged


def test_the_model_holds_the_exported_folder_byte_for_byte_and_its_own_code(logged, onnx_dir, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(MODEL_URI, dst_path=str(tmp_path)))
    copied = local / "artifacts" / ARTIFACT
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in onnx_dir.iterdir())
    for source in onnx_dir.iterdir():
        assert (copied / source.name).read_bytes() == source.read_bytes()
    assert not list(local.rglob("*.pkl"))  # models from code: nothing is unpickled at load
    code = local / "artifacts" / CODE_ARTIFACT / "signflow"
    assert (code / "serving" / "mlflow_model.py").is_file() and (code / "evaluation" / "openset.py").is_file()
    assert not (code / "training").exists()  # the import closure, not the whole project
    params = {spec.name: spec.default for spec in logged.signature.params.params}
    assert params == {"threshold": SIDECAR_THRESHOLD, "top_k": DEFAULT_TOP_K}
    assert logged.registered_model_version == 1


# ------------------------------------------------------------------ the pyfunc in Python


def test_pyfunc_answers_as_predictor_predict_on_the_same_files(model, onnx_dir, image_files):
    # Raw bytes and base64 text, alternately: both are encoded files.
    frame = pd.DataFrame({IMAGE_COLUMN: [path.read_bytes() if i % 2 else b64(path)
                                         for i, path in enumerate(image_files)]})
    by_default = answers(model.predict(frame))
    assert by_default == expected(load_predictor(onnx_dir / "model.onnx").predict(image_files))
    assert {row["prediction"] for row in by_default} == {UNKNOWN_NAME}  # the sidecar's threshold travelled
    accepting = answers(model.predict(frame, params={"threshold": 0.0}))
    assert accepting == expected(load_predictor(onnx_dir / "model.onnx", threshold=0.0).predict(image_files))
    assert {row["prediction"] for row in accepting} == {FAVOURED}


def test_threshold_and_top_k_params(model, onnx_dir, image_files):
    frame = pd.DataFrame({IMAGE_COLUMN: [b64(path) for path in image_files]})
    records = load_predictor(onnx_dir / "model.onnx", threshold=0.0).predict(image_files)
    threshold, low, high = split_threshold(records)
    rows = answers(model.predict(frame, params={"threshold": threshold, "top_k": 1}))
    assert rows[low]["prediction"] == UNKNOWN_NAME and rows[high]["prediction"] == FAVOURED
    assert rows == expected(load_predictor(onnx_dir / "model.onnx", threshold=threshold).predict(image_files, top_k=1))
    assert all(len(row["top_k"]) == 1 for row in rows)
    n_classes = len(records[0]["probabilities"])
    every = answers(model.predict(frame, params={"top_k": n_classes + 5}))
    assert all(len(row["top_k"]) == n_classes for row in every)


def test_uint8_arrays_are_accepted(model, onnx_dir, image_files):
    arrays = [read_rgb(path) for path in image_files]  # several sizes: resized as files are
    want = expected(load_predictor(onnx_dir / "model.onnx", threshold=0.0).predict(arrays))
    params = {"threshold": 0.0}
    assert answers(model.predict(pd.DataFrame({IMAGE_COLUMN: arrays}), params=params)) == want
    assert answers(model.predict(pd.DataFrame({IMAGE_COLUMN: [a.tolist() for a in arrays]}), params=params)) == want
    stack = np.stack([cv2.resize(a, (32, 32)) for a in arrays])
    from_stack = answers(model.predict({IMAGE_COLUMN: stack}, params=params))
    assert from_stack == expected(load_predictor(onnx_dir / "model.onnx", threshold=0.0).predict(stack))


def test_a_row_that_cannot_be_used_gets_its_own_error(model, image_files):
    good = b64(image_files[0])
    rows = answers(model.predict(pd.DataFrame({IMAGE_COLUMN: [
        good, "not base64!", base64.b64encode(b"just text").decode(), np.zeros((8, 8, 3), np.float32),
        np.zeros((2, 8, 8, 3), np.uint8), [[1, 2, 3]], good,
    ]})))
    errors = [row["error"] for row in rows]
    assert errors[0] is None and errors[-1] is None and rows[0]["prediction"] == rows[-1]["prediction"]
    assert "not valid base64" in errors[1]
    assert errors[2] == "not an image"
    assert "uint8 RGB array" in errors[3] and "float32" in errors[3]
    assert "one image per row" in errors[4]
    assert "uint8 RGB array" in errors[5]
    assert all(row["prediction"] is None for row in rows[1:-1])


@pytest.mark.parametrize("params, message", [
    ({"threshold": 1.5}, r"threshold must lie in \[0, 1\]"),
    ({"top_k": 0}, "top_k must be at least 1"),
])
def test_params_out_of_range_are_refused(model, image_files, params, message):
    with pytest.raises(MlflowException, match=message):
        model.predict(pd.DataFrame({IMAGE_COLUMN: [b64(image_files[0])]}), params=params)


def test_the_model_runs_on_the_code_it_carries_without_torch(logged, store, image_files, tmp_path):
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "sys.path[:] = [p for p in sys.path if not (Path(p) / 'signflow').is_dir()]  # as if not installed\n"
        "import mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1], dst_path=sys.argv[2])\n"
        "frame = pd.DataFrame({'image': [open(p, 'rb').read() for p in sys.argv[3:]]})\n"
        "rows = model.predict(frame, params={'threshold': 0.0})\n"
        "import signflow\n"
        "print(json.dumps({'signflow': signflow.__file__, 'predictions': list(rows['prediction'])}))\n"
    )
    local = tmp_path / "model"
    local.mkdir()
    status, out, err, heavy = run_checking_imports(code, MODEL_URI, local, *image_files, cwd=tmp_path,
                                                    tmp_path=tmp_path)
    assert status == 0, err
    found = json.loads(out.splitlines()[-1])
    assert Path(found["signflow"]).is_relative_to(local / "artifacts" / CODE_ARTIFACT)  # the logged copy
    assert found["predictions"] == [FAVOURED] * len(image_files)
    assert "torch" not in heavy and "timm" not in heavy


# ------------------------------------------------------------------ mlflow models serve


@pytest.fixture(scope="module")
def served(logged: ModelInfo, store: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_model(MODEL_URI, tmp_path_factory.mktemp("serve"), store) as url:
        yield f"{url}/invocations"


def test_served_model_answers_two_base64_jpegs_one_unknown_under_the_requested_threshold(
    served, onnx_dir, image_files
):
    jpegs = [path for path in image_files if path.suffix == ".jpg"]
    records = load_predictor(onnx_dir / "model.onnx", threshold=0.0).predict(jpegs)
    threshold, low, high = split_threshold(records)
    pair = [jpegs[high], jpegs[low]]
    status, answer = post_json(served, {
        "dataframe_split": {"columns": [IMAGE_COLUMN], "data": [[b64(path)] for path in pair]},
        "params": {"threshold": threshold},
    })
    assert status == 200, answer
    assert [row["prediction"] for row in answer["predictions"]] == [FAVOURED, UNKNOWN_NAME]
    assert answer["predictions"] == expected(
        load_predictor(onnx_dir / "model.onnx", threshold=threshold).predict(pair))


def test_served_model_takes_inputs_lists_and_defaults_to_the_sidecar_threshold(served, onnx_dir, image_files):
    status, answer = post_json(served, {"inputs": [b64(path) for path in image_files], "params": {"top_k": 2}})
    assert status == 200, answer
    assert answer["predictions"] == expected(load_predictor(onnx_dir / "model.onnx").predict(image_files, top_k=2))
    arrays = [read_rgb(path) for path in image_files[:2]]
    status, answer = post_json(served, {"inputs": [a.tolist() for a in arrays], "params": {"threshold": 0.0}})
    assert status == 200, answer
    assert answer["predictions"] == expected(load_predictor(onnx_dir / "model.onnx", threshold=0.0).predict(arrays))


def test_served_model_reports_bad_base64_and_bad_params(served, image_files):
    status, answer = post_json(served, {"dataframe_split": {"columns": [IMAGE_COLUMN],
                                                            "data": [["%%% not base64"], [b64(image_files[0])]]}})
    assert status == 200, answer
    bad, good = answer["predictions"]
    assert bad["prediction"] is None and "not valid base64" in bad["error"]
    assert good["error"] is None and good["prediction"] == UNKNOWN_NAME
    status, answer = post_json(served, {"inputs": [b64(image_files[0])], "params": {"threshold": 7}})
    assert status == 400 and "threshold must lie in [0, 1]" in answer["message"]
