"""The MLflow model: ``signflow predict --json``'s answers, decision policy included, behind ``mlflow models serve``.

The model is a pyfunc (:class:`SignflowModel`) around :class:`~signflow.serving.predictor.Predictor`:
it returns class names with "unknown" applied, confidence, probabilities and
the top-k, not a bare probability matrix, so a consumer of the registry needs
neither signflow's decision rule nor its class list. Its two inference params,
``threshold`` and ``top_k``, default to the sidecar's threshold (the evaluate
stage's choice) and :data:`~signflow.serving.batch.DEFAULT_TOP_K`.

Input: a DataFrame with one column, ``image``, one image per row: base64 text
(what a JSON request carries) or raw bytes of an encoded file (PNG, JPEG or any
format ``signflow predict`` reads), or an RGB uint8 array (H, W, 3) of any size
(nested lists in JSON). Output: one row per input row, in order, with the
``--json`` record's fields but ``path`` (the row is the image's identity);
a row that cannot be used has only ``error`` set, and the others still run.

What is logged (:func:`log_signflow_model`), and why:

- the exported folder (``models/onnx/``) as one artifact, its files copied byte
  for byte: the registry holds the very files DVC tracks;
- "models from code" (a short file, :data:`MODEL_CODE`) instead of a pickle,
  which MLflow 3 refuses to load by default;
- the signflow modules this one imports (its static import closure,
  :func:`signflow.codegraph.import_closure`) as the artifact :data:`CODE_ARTIFACT`:
  where signflow is not installed (``--env-manager virtualenv``) the model
  loads with that copy, appended to ``sys.path``, so it never shadows an
  installed signflow. (MLflow's ``code_paths`` would prepend it: a process that
  loads the model and then starts workers would give them a partial signflow.)
"""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType, Array, Map

from signflow.serving.batch import DEFAULT_TOP_K, Input, Result, predict_inputs
from signflow.serving.predictor import Predictor, load_predictor, read_sidecar

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
# The response's columns: a `signflow predict --json` record's fields but "path", then "error" (set on failed rows).
RESULT_COLUMNS = ("prediction", "confidence", "probabilities", "top_k", "error")
ARTIFACT = "onnx"  # the name of the exported folder among the model's artifacts
MODEL_NAME = "signflow-model"  # the logged model's name within its run
MODEL_FILE = "model.onnx"  # the file of that folder the model runs (model_config "model_file" may pick the int8 one)
MODEL_CODE_FILE = "signflow_model.py"
# The file MLflow executes to build the model at load time ("models from code": nothing is unpickled).
CODE_ARTIFACT = "signflow_code"  # the artifact holding the import closure (a folder with signflow/ in it)
MODEL_CODE = f'''"""Built by MLflow when it loads the model: signflow's pyfunc (see signflow.serving.mlflow_model).

An installed signflow is used; without one, the copy logged with the model (artifacts/{CODE_ARTIFACT}), appended
to sys.path so that it never shadows an installed package.
"""
import importlib.util
import sys
from pathlib import Path

import mlflow

if importlib.util.find_spec("signflow") is None:
    sys.path.append(str(Path(__file__).resolve().parent / "artifacts" / "{CODE_ARTIFACT}"))

from signflow.serving.mlflow_model import SignflowModel  # noqa: E402

mlflow.models.set_model(SignflowModel())
'''
SERVING_EXTRA = "predict"  # signflow[predict]: the packages the model runs on (numpy, OpenCV, Pillow, onnxruntime)
WRAPPER_DISTRIBUTIONS = ("mlflow", "pandas")  # and what the pyfunc wrapper adds to them
EXAMPLE_FORMAT = ".jpg"  # the input example's encoding: what a client typically posts

INPUT_SCHEMA = Schema([
    # Any: base64 text, bytes and arrays (nested lists) all reach the model as sent; it checks each row itself.
    ColSpec(AnyType(), IMAGE_COLUMN),
])
OUTPUT_SCHEMA = Schema([
    ColSpec(DataType.string, "prediction", required=False),
    ColSpec(DataType.double, "confidence", required=False),
    ColSpec(Map(DataType.double), "probabilities", required=False),
    ColSpec(Array(Array(AnyType())), "top_k", required=False),  # [[class name, probability], ...]
    ColSpec(DataType.string, "error", required=False),
])


class SignflowModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: images in, ``signflow predict --json``'s answers out (module docstring: formats)."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        model_file = (context.model_config or {}).get("model_file", MODEL_FILE)
        self.predictor = load_predictor(Path(context.artifacts[ARTIFACT]) / model_file)
        log.info("serving %r", self.predictor)

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        if self.predictor is None:
            raise RuntimeError("SignflowModel.predict before load_context: load it with mlflow.pyfunc.load_model")
        threshold, top_k = resolve_params(params, self.predictor.threshold)
        images = image_column(model_input)
        records = predict_rows(self.predictor, images, threshold, top_k)
        index = model_input.index if len(images) == len(model_input) else None  # the caller's rows, where they are
        return pd.DataFrame({column: pd.Series([r.get(column) for r in records], index=index,
                                               dtype=object)  # object: a missing value is None (JSON null)
                             for column in RESULT_COLUMNS})


def resolve_params(params: Mapping[str, Any] | None, default_threshold: float) -> tuple[float, int]:
    """(threshold, top_k) from a request's params, defaults where absent; MlflowException (HTTP 400) if out of range."""
    params = params or {}
    threshold = default_threshold if params.get("threshold") is None else float(params["threshold"])
    top_k = DEFAULT_TOP_K if params.get("top_k") is None else int(params["top_k"])
    if not 0.0 <= threshold <= 1.0:
        raise MlflowException.invalid_parameter_value(f"params.threshold must lie in [0, 1], got {threshold}")
    if top_k < 1:
        raise MlflowException.invalid_parameter_value(f"params.top_k must be at least 1, got {top_k}")
    return threshold, top_k


def image_column(model_input: Any) -> list[Any]:
    """The images of a request, one per row."""
    if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
        found = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
        raise MlflowException.invalid_parameter_value(
            f"expected a DataFrame with an {IMAGE_COLUMN!r} column (one image per row), got {found}")
    images = list(model_input[IMAGE_COLUMN])
    # MLflow parses {"inputs": [text, ...]} and {"inputs": {"image": [text, ...]}} into one row holding the
    # list (its rule for a dict of string lists): for this model that can only mean one image per item.
    if len(images) == 1 and isinstance(images[0], list) and images[0] \
            and all(isinstance(item, (str, bytes)) for item in images[0]):
        return list(images[0])
    return images


def predict_rows(predictor: Predictor, images: Sequence[Any], threshold: float, top_k: int) -> list[Result]:
    """One record per image, in order: ``--json``'s fields but "path", or ``{"error"}`` for one that cannot be used.

    Encoded images go through the very decoder ``signflow predict`` uses on
    files (:mod:`signflow.data.images`: header checked before pixels, EXIF
    orientation, every mode), from a private temporary folder: writing a few
    kB costs microseconds against milliseconds of decoding, and the project
    keeps one decoder. Arrays go the way of ``Predictor.predict``'s arrays.
    """
    with tempfile.TemporaryDirectory(prefix="signflow-mlflow-") as folder:
        prepared = [_prepare(image, Path(folder) / f"{row:06d}") for row, image in enumerate(images)]
        usable: list[Input] = [item for item in prepared if not isinstance(item, str)]
        results = iter(predict_inputs(predictor, usable, threshold, top_k))
        return [{"error": item} if isinstance(item, str) else _without_path(next(results)) for item in prepared]


def _without_path(record: Result) -> Result:
    return {key: value for key, value in record.items() if key != "path"}


def _prepare(image: Any, spool: Path) -> Path | np.ndarray | str:
    """A row as ``predict_inputs`` takes it (a file holding its bytes, or an array), or why it cannot be used."""
    if isinstance(image, str):
        try:
            image = base64.b64decode("".join(image.split()), validate=True)  # MLflow's own encoder wraps lines
        except ValueError as err:  # binascii.Error, or text that is not ASCII
            return f"not valid base64 ({err})"
    if isinstance(image, (bytes, bytearray, memoryview)):
        spool.write_bytes(image)
        return spool
    if isinstance(image, (list, np.ndarray)):
        return _as_image_array(image)
    return f"expected base64 text, image bytes or an RGB uint8 array (H, W, 3), got {type(image).__name__}"


def _as_image_array(image: list | np.ndarray) -> np.ndarray | str:
    """An array row; JSON's nested lists of 0-255 integers become uint8 (arrays keep their dtype: predict judges it)."""
    if isinstance(image, list):
        try:
            image = np.asarray(image)
        except ValueError as err:  # ragged nesting
            return f"not an image array: {err}"
        if image.dtype.kind in "iu" and image.size and 0 <= image.min() and image.max() <= 255:
            image = image.astype(np.uint8)
    if image.ndim == 4:
        return f"one image per row: got a stack of shape {image.shape}"
    return image


# ------------------------------------------------------------------ logging


def log_signflow_model(
    onnx_dir: Path,
    *,
    example_images: np.ndarray,
    metadata: Mapping[str, Any] | None = None,
    registry_name: str | None = None,
    name: str = MODEL_NAME,
    model_file: str = MODEL_FILE,
) -> ModelInfo:
    """Log ``onnx_dir`` (the export stage's folder) as :class:`SignflowModel` in the active run; register it if named.

    ``example_images``: uint8 RGB (N, H, W, 3), the input example, posted as
    JPEG base64 text as a client would. The signature's params default to the
    sidecar's threshold and ``DEFAULT_TOP_K``. ``model_file``: which model of
    the folder the pyfunc runs. Returns MLflow's ``ModelInfo`` (its
    ``registered_model_version`` is None without ``registry_name``).
    """
    onnx_dir = Path(onnx_dir)
    threshold = float(read_sidecar(onnx_dir / model_file)["threshold"])  # fails early, naming a bad folder
    signature = ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA, params=ParamSchema([
        ParamSpec("threshold", DataType.double, threshold),
        ParamSpec("top_k", DataType.long, DEFAULT_TOP_K),
    ]))
    example = pd.DataFrame({IMAGE_COLUMN: encode_images(example_images)})
    with tempfile.TemporaryDirectory(prefix="signflow-log-") as folder:
        code_file = Path(folder) / MODEL_CODE_FILE
        code_file.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(code_file),
            artifacts={ARTIFACT: str(onnx_dir), CODE_ARTIFACT: str(stage_code(Path(folder) / CODE_ARTIFACT))},
            model_config={"model_file": model_file},
            signature=signature, input_example=(example, {"threshold": threshold, "top_k": DEFAULT_TOP_K}),
            registered_model_name=registry_name or None, metadata=dict(metadata or {}),
            pip_requirements=serving_requirements(),
        )


def encode_images(images: np.ndarray, extension: str = EXAMPLE_FORMAT) -> list[str]:
    """RGB uint8 images (N, H, W, 3) as base64 text of encoded files, the ``image`` column of a JSON request."""
    encoded = []
    for image in images:
        ok, buffer = cv2.imencode(extension, cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"OpenCV cannot encode a {image.dtype} {image.shape} image as {extension}")
        encoded.append(base64.b64encode(buffer.tobytes()).decode("ascii"))
    return encoded


def stage_code(folder: Path) -> Path:
    """``folder`` holding ``signflow/``: this module's signflow import closure, laid out as the package."""
    from signflow.codegraph import PACKAGE_DIR, import_closure

    for source in import_closure(Path(__file__)):
        target = folder / source.relative_to(PACKAGE_DIR.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return folder


def serving_requirements() -> list[str]:
    """The served model's pip requirements: signflow[predict]'s and the wrapper's packages, pinned as installed here."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    found = [Requirement(line) for line in requires("signflow") or []]
    names = [r.name for r in found if r.marker is None or r.marker.evaluate({"extra": SERVING_EXTRA})]
    return [f"{name}=={version(name)}" for name in dict.fromkeys([*names, *WRAPPER_DISTRIBUTIONS])]
