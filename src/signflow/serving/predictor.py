"""``signflow.load_predictor``: a trained model, PyTorch checkpoint or ONNX file, behind one small API.

    >>> import signflow
    >>> predictor = signflow.load_predictor("models/onnx/model.onnx")
    >>> predictor.predict(["photo.jpg", "more_photos/", rgb_array])  # the records of `signflow predict --json`

The file's suffix picks the backend (:data:`BACKENDS`): ``.pt`` rebuilds the
checkpoint in PyTorch (``signflow.model.inference``); ``.onnx`` runs the exported
graph in onnxruntime, reading class names, image size and threshold from the
JSON sidecar beside it. Both give calibrated probabilities for uint8 RGB images
(N, S, S, 3) already decoded and resized by ``signflow.data.images``, and share
everything else (``signflow.serving.batch``). This module imports nothing heavy at the
top: torch only inside the torch backend, so a ``pip install signflow[predict]``
environment (numpy, OpenCV, Pillow, onnxruntime; no torch) runs the ONNX one.

The ONNX contract (``signflow.serving.export`` writes it): input "images" uint8
(batch, S, S, 3) RGB NHWC; output "probabilities" float32 (batch, K),
normalisation and temperature folded in; the sidecar ``model.json`` (see
:func:`read_sidecar`).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from signflow.data.images import DEFAULT_LIMITS, ImageLimits
from signflow.logs import first_line
from signflow.serving.batch import DEFAULT_BATCH_SIZE, DEFAULT_TOP_K, Input, Result, predict_inputs

if TYPE_CHECKING:
    from signflow.model.inference import LoadedModel

log = logging.getLogger(__name__)

# The ONNX contract: the sidecar's format tag, and the graph's input and output.
ONNX_FORMAT, ONNX_FORMAT_VERSION = "signflow-onnx", 1
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
INPUT_SPEC = MappingProxyType({"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "color": "RGB"})
SIDECAR_SUFFIX = ".json"
ONNX_PROVIDERS = ("CPUExecutionProvider",)  # the CPU build of onnxruntime (signflow[predict]) has only this
ONNX_DEVICES = ("auto", "cpu")


class PredictorError(ValueError):
    """A model file that cannot be used (missing, unknown format, broken sidecar...); the message names it."""


class Predictor(ABC):
    """A loaded model: ``class_names``, ``image_size``, ``threshold``, and two ways to classify.

    :meth:`predict_images` takes decoded images at the model's size and returns
    probabilities; :meth:`predict` takes files, directories and arrays and
    returns ``signflow predict --json``'s records.
    """

    backend: ClassVar[str]
    stored_threshold: float | None = None  # the threshold saved with the model file, if it has one

    def __init__(self, path: Path, class_names: Sequence[str], image_size: int, threshold: float) -> None:
        self.path = Path(path)
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.threshold = float(threshold)  # known-ness below it gives "unknown" (0: nothing rejected)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, classes={self.class_names}, "
                f"image_size={self.image_size}, threshold={self.threshold:g})")

    def predict_images(self, images: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Calibrated probabilities (N, K) float32 for uint8 RGB images (N, S, S, 3), S = ``image_size``."""
        images = np.asarray(images)
        size = self.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 (N, {size}, {size}, 3) images, got {images.dtype} {images.shape}")
        if len(images) == 0:
            return np.empty((0, len(self.class_names)), dtype=np.float32)
        return self._probabilities(images, batch_size)

    @abstractmethod
    def _probabilities(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """:meth:`predict_images` on a checked, non-empty batch."""

    def predict(
        self,
        inputs: Input | Iterable[Input],
        top_k: int = DEFAULT_TOP_K,
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int = 0,
        limits: ImageLimits = DEFAULT_LIMITS,
    ) -> list[Result]:
        """One record per image, in input order, as ``signflow predict --json`` prints them.

        ``inputs``: a path or an array, or a list mixing them. A path is an image
        file or a directory (searched recursively); an array is one RGB uint8
        image (H, W, 3) of any size, resized as files are, or a stack
        (N, H, W, 3), each image its own record, named ``<array i>``. A record
        is ``{"path", "prediction", "confidence", "probabilities", "top_k"}``,
        or ``{"path", "error"}`` for an input that could not be used.
        ``workers``: decoding threads, 0 = one per core.
        """
        return predict_inputs(self, inputs, self.threshold, top_k, batch_size, workers, limits)


# ------------------------------------------------------------------ PyTorch


class TorchPredictor(Predictor):
    """A signflow checkpoint (``.pt``) run by PyTorch, on ``device``."""

    backend = "torch"

    def __init__(self, path: Path, loaded: LoadedModel, threshold: float) -> None:
        super().__init__(path, loaded.class_names, loaded.image_size, threshold)
        self.loaded = loaded

    def _probabilities(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        from signflow.model.inference import predict_probs

        return predict_probs(self.loaded, images, batch_size)


def _load_torch(path: Path, device: str, threshold: float | None) -> Predictor:
    # torch, timm and the model code: only for this backend.
    from signflow.model.checkpoint import CheckpointError
    from signflow.model.inference import load_model
    from signflow.runtime import DeviceUnavailableError, resolve_device

    try:
        resolved = resolve_device(device, "--device")
    except DeviceUnavailableError as err:
        raise PredictorError(str(err)) from None
    try:
        loaded = load_model(path, resolved)
    except CheckpointError as err:
        raise PredictorError(str(err)) from None
    except (KeyError, ValueError, RuntimeError) as err:
        # Passed the safe load but does not fit this code: wrong shapes, unknown backbone...
        raise PredictorError(f"cannot use checkpoint {path}: {type(err).__name__}: {err}") from None
    # A checkpoint carries no threshold: evaluate chooses it after training (metrics/evaluate.json).
    return TorchPredictor(path, loaded, 0.0 if threshold is None else threshold)


# ------------------------------------------------------------------ ONNX


def sidecar_path(model_path: Path | str) -> Path:
    """The JSON beside an ONNX model: ``model.onnx`` -> ``model.json``, ``model.int8.onnx`` -> ``model.int8.json``."""
    return Path(model_path).with_suffix(SIDECAR_SUFFIX)


def _sidecar_problem(meta: Any) -> str | None:
    """What is wrong with a parsed sidecar, or None."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, got {type(meta).__name__}"
    if meta.get("format") != ONNX_FORMAT:
        return f"format is {meta.get('format')!r}, expected {ONNX_FORMAT!r}"
    if meta.get("format_version") != ONNX_FORMAT_VERSION:
        return f"format_version {meta.get('format_version')!r}; this signflow reads {ONNX_FORMAT_VERSION}"
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        return f"class_names must be a non-empty list of distinct strings, got {names!r}"
    size = meta.get("image_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f"image_size must be a positive integer, got {size!r}"
    if meta.get("input") != dict(INPUT_SPEC):
        return f"input is {meta.get('input')!r}; this signflow feeds {dict(INPUT_SPEC)}"
    output = meta.get("output")
    if not isinstance(output, dict) or output.get("name") != OUTPUT_NAME:
        return f"output is {output!r}; expected {{'name': {OUTPUT_NAME!r}, ...}}"
    threshold = meta.get("threshold")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0:
        return f"threshold must be a number in [0, 1], got {threshold!r}"
    return None


def read_sidecar(model_path: Path | str) -> dict[str, Any]:
    """The validated sidecar of an ONNX model (keys: the ONNX contract in ``signflow.serving.export``).

    Raises :class:`PredictorError` naming the file when it is missing, not
    JSON, or not a signflow-onnx sidecar this version reads.
    """
    path = sidecar_path(model_path)
    if not path.is_file():
        raise PredictorError(f"{path} not found: an ONNX model needs the sidecar JSON the export stage "
                             f"writes beside it (class names, image size, threshold)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PredictorError(f"{path} is not valid JSON: {err}") from None
    problem = _sidecar_problem(meta)
    if problem:
        raise PredictorError(f"{path} is not a usable signflow-onnx sidecar: {problem}")
    return meta


class OnnxPredictor(Predictor):
    """An exported ``.onnx`` model run by onnxruntime on the CPU; ``metadata`` is its sidecar."""

    backend = "onnx"

    def __init__(self, path: Path, session: Any, metadata: dict[str, Any], threshold: float) -> None:
        super().__init__(path, metadata["class_names"], metadata["image_size"], threshold)
        self.session = session
        self.metadata = metadata
        self.stored_threshold = float(metadata["threshold"])  # the evaluate stage's, when it was exported

    def _probabilities(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        parts = []
        for start in range(0, len(images), batch_size):
            batch = np.ascontiguousarray(images[start:start + batch_size])
            (probs,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
            parts.append(probs)
        probs = np.concatenate(parts).astype(np.float32, copy=False)
        if probs.shape != (len(images), len(self.class_names)):
            raise PredictorError(f"{self.path} returned probabilities of shape {probs.shape}, expected "
                                 f"{(len(images), len(self.class_names))} (sidecar {sidecar_path(self.path)})")
        return probs


def _check_session(session: Any, path: Path, meta: dict[str, Any]) -> None:
    """The graph has the contract's input and output, at the sidecar's size and class count."""
    inputs = {node.name: node for node in session.get_inputs()}
    outputs = {node.name: node for node in session.get_outputs()}
    size, k = meta["image_size"], len(meta["class_names"])
    node = inputs.get(INPUT_NAME)
    if node is None or len(inputs) != 1 or node.type != "tensor(uint8)" or len(node.shape) != 4 \
            or any(isinstance(d, int) and d != want for d, want in zip(node.shape[1:], (size, size, 3), strict=True)):
        found = [(n.name, n.type, n.shape) for n in inputs.values()]
        raise PredictorError(f"{path}: expected one input {INPUT_NAME!r} uint8 (batch, {size}, {size}, 3) "
                             f"as its sidecar says, found {found}")
    node = outputs.get(OUTPUT_NAME)
    if node is None or len(node.shape) != 2 or (isinstance(node.shape[1], int) and node.shape[1] != k):
        found = [(n.name, n.type, n.shape) for n in outputs.values()]
        raise PredictorError(f"{path}: expected an output {OUTPUT_NAME!r} (batch, {k}) for the sidecar's "
                             f"{k} classes, found {found}")


def _load_onnx(path: Path, device: str, threshold: float | None) -> Predictor:
    if device not in ONNX_DEVICES:
        raise PredictorError(f"--device {device}: the onnx backend runs on the CPU (onnxruntime's "
                             f"CPUExecutionProvider); use --device cpu or the torch backend")
    meta = read_sidecar(path)
    try:
        import onnxruntime
    except ImportError:
        raise PredictorError(f"{path}: onnxruntime is not installed; pip install 'signflow[predict]'") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings (unused initialisers...) are not the user's to fix
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=list(ONNX_PROVIDERS))
    except Exception as err:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for a bad file
        raise PredictorError(f"cannot load ONNX model {path}: {first_line(err)}") from None
    _check_session(session, path, meta)
    return OnnxPredictor(path, session, meta, meta["threshold"] if threshold is None else threshold)


# ------------------------------------------------------------------ registry and factory

Loader = Callable[[Path, str, float | None], Predictor]
BACKENDS: Mapping[str, Loader] = MappingProxyType({"torch": _load_torch, "onnx": _load_onnx})
MODEL_SUFFIXES: Mapping[str, str] = MappingProxyType({".pt": "torch", ".onnx": "onnx"})  # suffix -> backend


def list_backends() -> list[str]:
    return list(BACKENDS)


def resolve_backend(path: Path | str) -> str:
    """The backend a model file needs, from its suffix; PredictorError for any other suffix."""
    path = Path(path)
    backend = MODEL_SUFFIXES.get(path.suffix.lower())
    if backend is None:
        raise PredictorError(f"{path}: unknown model format {path.suffix or '(no suffix)'!r}; expected "
                             + " or ".join(f"{suffix} ({name})" for suffix, name in MODEL_SUFFIXES.items()))
    return backend


def load_predictor(path: Path | str, device: str = "cpu", threshold: float | None = None) -> Predictor:
    """Load a ``.pt`` checkpoint (PyTorch) or an ``.onnx`` export (onnxruntime) for prediction.

    ``threshold``: known-ness below it gives "unknown"; ``None`` is the
    model's own: an ONNX sidecar's (the evaluate stage's choice at export),
    0 (nothing rejected) for a checkpoint, which carries none. ``device``:
    auto | cpu | cuda (the ONNX backend runs on the CPU). Raises
    :class:`PredictorError` with one line naming the file when it cannot be used.
    """
    path = Path(path)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    backend = resolve_backend(path)
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist (the pipeline writes it: `dvc repro`)"
        raise PredictorError(f"model {path} {reason}")
    predictor = BACKENDS[backend](path, device, threshold)
    log.debug("loaded %r", predictor)
    return predictor
