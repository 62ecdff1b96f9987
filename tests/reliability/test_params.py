"""Hostile and broken params.yaml: every bad value, key or file is one line naming the key, exit 2, nothing written.

The library cases load the file as every stage does (``load_config``); the stage cases run the real
``stages/*.py`` scripts in a project folder whose outputs already exist and check stderr, the exit code
and that no file changed. Existing cases live in tests/test_config.py (unknown keys, a list file, a few
bad values): they are not repeated here.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from signflow import cli
from signflow.commands import list_backbones
from signflow.config import Config, ConfigError, from_mapping, load_config, load_params
from signflow.logs import DEBUG_ENV, EXIT_USER_ERROR, USER_ERRORS, report_user_errors

from tiny_project import shrink_params

REPO = Path(__file__).resolve().parents[2]
ERROR_PREFIX = "signflow: error: "
STAGE_TIMEOUT = 120
# Exceptions that are not a user's to fix at a stage's top level (each caught where it happens).
NOT_USER_ERRORS = {"BadImageError"}  # one bad image: quarantined and counted, never fatal


# ------------------------------------------------------------------ helpers (also used by test_checkpoints.py)


def real_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def with_value(params: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``params`` with ``dotted`` set to ``value``."""
    out = copy.deepcopy(dict(params))
    *parents, last = dotted.split(".")
    node = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def stage_outputs(name: str) -> list[Path]:
    """The outs, metrics and plots ``dvc.yaml`` declares for stage ``name``, relative to the project."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    entries = [e for section in ("outs", "metrics", "plots") for e in stage.get(section, [])]
    return [Path(next(iter(e)) if isinstance(e, dict) else e) for e in entries]


def seed_outputs(root: Path, name: str) -> None:
    """Stand-ins for stage ``name``'s outputs (a previous good run), which a failing run must leave alone."""
    for out in stage_outputs(name):
        target = root / out / "previous.txt" if not out.suffix else root / out
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"previous good {out}\n")


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and mtime (ns)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def stage_env(root: Path, debug: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    env.update(SIGNFLOW_LOG="INFO", MLFLOW_TRACKING_URI=f"sqlite:///{root.parent / 'mlflow.db'}")
    if debug:
        env[DEBUG_ENV] = "1"
    return env


def start_stage(root: Path, name: str, debug: bool = False) -> subprocess.Popen[str]:
    """``python stages/<name>.py`` run in ``root`` (a project folder), as DVC runs it."""
    return subprocess.Popen([sys.executable, str(REPO / "stages" / f"{name}.py")], cwd=root, env=stage_env(root, debug),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=STAGE_TIMEOUT)
    return proc.returncode, out, err


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> str:
    """A user error: exit 2, stdout empty, stderr exactly one ``signflow: error:`` line holding each needle."""
    lines = err.splitlines()
    assert code == EXIT_USER_ERROR, err
    assert out == ""
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def load_config_from(params: Mapping[str, Any]) -> Config:
    return from_mapping(Config, params)


def tiny_project_dir(base: Path, params: Mapping[str, Any] | str, stage: str) -> Path:
    """``base/project`` with ``params`` (a mapping, or the file's raw text) and ``stage``'s outputs seeded."""
    root = base / "project"
    root.mkdir()
    text = params if isinstance(params, str) else yaml.safe_dump(dict(params), sort_keys=False)
    (root / "params.yaml").write_text(text)
    seed_outputs(root, stage)
    return root


# ------------------------------------------------------------------ every leaf key, a wrong type

# A value of the wrong type per annotation, and the words the message must use for what is allowed.
WRONG_TYPE: dict[Any, tuple[Any, str]] = {
    bool: ("maybe", "true | false"),
    int: ("ten", "an integer"),
    float: ("fast", "a number"),
    str: (["a", "list"], "a string"),
    tuple: ({"not": "a list"}, "a list"),
    dict: (["not", "a", "mapping"], "a mapping"),
}


def _leaves(cls: type, params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, annotation) for every leaf of ``params`` (the real file), per the config dataclasses."""
    hints = typing.get_type_hints(cls)
    for name, value in params.items():
        annotation = hints[name]
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(annotation):
            yield from _leaves(annotation, value, f"{dotted}.")
        else:
            yield dotted, _plain(annotation)


def _plain(annotation: Any) -> Any:
    """The type a value must have: ``float | None`` (a guard that ``null`` turns off) is a float when set."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation


LEAVES = list(_leaves(Config, real_params()))


def test_every_config_field_is_a_leaf_of_params_yaml() -> None:
    """The parametrisation below covers every setting: the real file sets each config field."""
    def fields(cls: type, prefix: str = "") -> Iterator[str]:
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            yield from fields(hint, f"{prefix}{f.name}.") if dataclasses.is_dataclass(hint) else [f"{prefix}{f.name}"]

    assert sorted(key for key, _ in LEAVES) == sorted(fields(Config))


@pytest.mark.parametrize(("key", "annotation"), LEAVES, ids=[key for key, _ in LEAVES])
def test_wrong_type_names_the_key_and_what_is_allowed(tmp_path: Path, key: str, annotation: type) -> None:
    value, allowed = WRONG_TYPE[annotation]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_value(real_params(), key, value)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{key}=" in message and repr(value) in message and f"allowed: {allowed}" in message


def test_class_name_that_is_not_a_name_fails() -> None:
    # Before: {12: [1]} became the class name "[1]" and {12: null} the name "None".
    for bad in ([1, 2], None, {"a": 1}):
        params = with_value(real_params(), "data.classes", {12: "priority_road", 13: bad})
        with pytest.raises(ConfigError, match=r"data\.classes\.13=.*allowed: a name"):
            load_config_from(params)


# ------------------------------------------------------------------ every range and choice

# (key, out-of-range or unknown value, text the message must hold). The keys tests/test_config.py
# already checks (strategy, model.backbone, model.weights, data.synthetic.min_size, unknown.max_images,
# train.lr, split sums, unknown/heldout overlaps, data.folder.path) are not repeated.
OUT_OF_RANGE = [
    ("data.image_size", 7, "8 <= value <= 1024"),
    ("data.image_size", 1025, "8 <= value <= 1024"),
    ("data.min_image_side", 0, "1 <= value"),
    ("data.max_image_side", 4, "8 <= value"),  # below data.min_image_side
    ("data.decode_workers", -1, "0 <= value"),
    ("data.classes", {}, "at least one class"),
    ("data.classes", {12: "stop", 13: "stop"}, "unique names"),
    ("data.classes", {12: "stop", 13: "unknown"}, "none of them 'unknown'"),
    ("data.gtsrb.md5", "xyz", "32 hex digits"),
    ("data.gtsrb.url", "", "URL"),
    ("data.synthetic.tracks_per_class", 0, "1 <= value"),
    ("data.synthetic.frames_per_track", 0, "1 <= value"),
    ("data.synthetic.max_other_tracks", 0, "1 <= value"),
    ("data.synthetic.max_size", 10, "24 <= value"),  # below min_size
    ("split.train", 1.5, "0.0 <= value <= 1.0"),
    ("split.group_by", "frame", "track | image"),
    ("unknown.heldout_max_images", -1, "0 <= value"),
    ("model.dropout", 1.0, "0.0 <= value <= 0.99"),
    ("model.linear.input_size", 4, "8 <= value <= 1024"),
    ("model.linear.pooled_blocks", -1, "0 <= value"),
    ("train.epochs", 0, "1 <= value"),
    ("train.batch_size", 0, "1 <= value"),
    ("train.feature_views", 0, "1 <= value"),
    ("train.backbone_lr_mult", 0.0, "1e-12 <= value"),
    ("train.weight_decay", -1.0, "0 <= value"),
    ("train.warmup_epochs", -1.0, "0 <= value"),
    ("train.grad_clip", -1.0, "0 <= value"),
    ("train.momentum", -0.1, "0 <= value"),
    ("train.threads", -1, "0 <= value"),
    ("train.patience", -1, "0 <= value"),
    ("train.label_smoothing", 1.0, "0.0 <= value <= 0.99"),
    ("train.unfreeze", 0, "1 <= value"),
    ("train.optimizer", "adam", "adamw | sgd"),
    ("train.balance", "oversample", "none | loss | sampler"),
    ("train.monitor", "val_f1", "val_accuracy | val_loss"),
    ("train.device", "tpu", "auto | cpu | cuda"),
    ("train.amp", "fp8", "none | bf16 | fp16"),
    ("train.augment.scale_min", 0.0, "0.05 <= value <= 1.0"),
    ("train.augment.perspective", 1.5, "0.0 <= value <= 1.0"),
    ("train.augment.hue", 0.6, "0.0 <= value <= 0.5"),
    ("train.augment.blur_prob", 1.5, "0.0 <= value <= 1.0"),
    ("train.augment.rotate_degrees", -1.0, "0.0 <= value"),
    ("train.augment.brightness", -1.0, "0.0 <= value"),
    ("train.augment.contrast", -1.0, "0.0 <= value"),
    ("train.augment.saturation", -1.0, "0.0 <= value"),
    ("train.distributed.nproc", 0, "1 <= value"),
    ("evaluate.batch_size", 0, "1 <= value"),
    ("evaluate.ece_bins", 1, "2 <= value"),
    ("evaluate.threshold.tolerance_se", -0.5, "0.0 <= value"),
    ("evaluate.threshold.tolerance_se", float("nan"), "0.0 <= value"),
    ("evaluate.threshold.known_kept", 1.5, "0.0 <= value <= 1.0"),
    ("evaluate.threshold.heldout_rejected", -0.1, "0.0 <= value <= 1.0"),
    ("evaluate.threshold.policy", "max_accuracy", "se_rule | known_kept | heldout_rejected"),
    ("train.lr", float("nan"), "1e-12 <= value"),
    ("export.opset", 16, "17 <= value"),
    ("export.tolerance", 0.0, "1e-12 <= value"),
    ("export.max_int8_drop", 101.0, "-100.0 <= value <= 100.0"),
    ("export.calibration_images", 0, "1 <= value"),
    ("export.benchmark_images", 0, "1 <= value"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), OUT_OF_RANGE, ids=[f"{k}={v!r}" for k, v, _ in OUT_OF_RANGE])
def test_out_of_range_or_unknown_value_names_the_key_and_what_is_allowed(key: str, value: Any, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_from(with_value(real_params(), key, value))
    message = str(info.value)
    assert f"{key}=" in message and allowed in message, message


# ------------------------------------------------------------------ broken files

DUPLICATE_TOP = "strategy: linear\nstrategy: full\n"
DUPLICATE_NESTED = "train:\n  epochs: 3\n  lr: 0.1\n  epochs: 5\n"

BROKEN_FILES = {
    # name: (file text, words the message must hold)
    "empty": ("", ["is empty", "restore it"]),
    "comments_only": ("# strategy: full\n", ["is empty"]),
    "scalar_number": ("42\n", ["expected a mapping", "got int"]),
    "scalar_string": ("strategy=full\n", ["expected a mapping", "got str"]),
    "duplicate_top_level_key": (DUPLICATE_TOP, ["line 2", "'strategy' is given twice", "first on line 1"]),
    "duplicate_nested_key": (DUPLICATE_NESTED, ["line 4", "'epochs' is given twice", "first on line 2"]),
    "duplicate_in_flow_mapping": ("data: {image_size: 32, image_size: 64}\n", ["'image_size' is given twice"]),
    "yaml_syntax": ("train:\n  epochs: [1, 2\n", ["line", "fix the YAML syntax"]),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_FILES))
def test_broken_file_is_refused_naming_the_file(tmp_path: Path, kind: str) -> None:
    text, needles = BROKEN_FILES[kind]
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it.*project root"):
        load_config(tmp_path / "params.yaml")


def test_yaml_merge_keys_still_override(tmp_path: Path) -> None:
    """Refusing duplicates must not refuse YAML's own override of merged (``<<``) keys."""
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert load_params(path)["other"] == {"x": 3, "y": 2}


# ------------------------------------------------------------------ one line, from every stage, nothing written

STAGES = sorted(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
TORCH_STAGES = {"evaluate", "report", "export"}  # import torch and MLflow first: ~5 s each on an idle core


@pytest.mark.parametrize(
    "stage", [pytest.param(s, marks=pytest.mark.slow) if s in TORCH_STAGES else s for s in STAGES]
)
def test_stage_with_bad_params_prints_one_line_and_writes_nothing(tmp_path: Path, stage: str) -> None:
    """Before: a bad strategy printed a 15-line traceback before the message."""
    params = with_value(shrink_params(real_params()), "strategy", "fine-tune")
    root = tiny_project_dir(tmp_path, params, stage)
    before = snapshot(tmp_path)
    code, out, err = finish(start_stage(root, stage))
    assert_one_line_error(code, out, err, "params.yaml: strategy='fine-tune'", "allowed: linear | partial")
    assert snapshot(tmp_path) == before  # outputs untouched, nothing new (no MLflow store either)


def test_debug_switch_shows_the_traceback(tmp_path: Path) -> None:
    root = tiny_project_dir(tmp_path, with_value(shrink_params(real_params()), "strategy", "fine-tune"), "split")
    before = snapshot(tmp_path)
    code, _, err = finish(start_stage(root, "split", debug=True))
    assert code != 0 and "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("signflow.config.ConfigError: params.yaml: strategy='fine-tune'")
    assert snapshot(tmp_path) == before


SPLIT_CASES = {
    # kind: (params.yaml text, None for no file; what the one line must say)
    "unknown_key": ("stratgy: full\n", "stratgy"),
    "wrong_type": ("train:\n  epochs: ten\n", "train.epochs='ten'"),
    "empty": ("", "params.yaml is empty"),
    "list": ("- strategy\n- full\n", "expected a mapping"),
    "duplicate_key": (DUPLICATE_NESTED, "'epochs' is given twice"),
    "yaml_syntax": ("strategy: [full\n", "params.yaml, line"),
    "missing": (None, "params.yaml: cannot read it"),
}


@pytest.mark.parametrize("kind", SPLIT_CASES)
def test_split_stage_refuses_a_broken_params_file(tmp_path: Path, kind: str) -> None:
    text, needle = SPLIT_CASES[kind]
    root = tiny_project_dir(tmp_path, "", "split")
    if text is None:
        (root / "params.yaml").unlink()
    else:
        # A broken key in an otherwise valid file, or a broken file as a whole.
        whole = kind in ("empty", "list", "yaml_syntax")
        valid = yaml.safe_dump(shrink_params(real_params()), sort_keys=False)
        (root / "params.yaml").write_text(text if whole else text + _without_top_keys(valid, text))
    before = snapshot(tmp_path)
    assert_one_line_error(*finish(start_stage(root, "split")), needle)
    assert snapshot(tmp_path) == before


def _without_top_keys(valid: str, text: str) -> str:
    """``valid`` YAML minus the top-level sections ``text`` sets (so ``text``'s own keys are not duplicated)."""
    keys = {line.split(":")[0] for line in text.splitlines() if line and not line.startswith(" ")}
    params = yaml.safe_load(valid)
    return yaml.safe_dump({k: v for k, v in params.items() if k not in keys}, sort_keys=False)


def test_download_stage_refuses_an_unknown_source(tmp_path: Path) -> None:
    """data.source is checked by the only stage that reads it (signflow.data.raw), as that stage starts."""
    root = tiny_project_dir(tmp_path, with_value(shrink_params(real_params()), "data.source", "kaggle"), "download")
    before = snapshot(tmp_path)
    assert_one_line_error(*finish(start_stage(root, "download")), "data.source='kaggle'", "synthetic")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ user errors vs bugs, the CLI, the registry


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    code = "from signflow.logs import run_stage\ndef main():\n    return 1 / 0\nrun_stage(main)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=stage_env(tmp_path), capture_output=True,
                          text=True, timeout=STAGE_TIMEOUT)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "ZeroDivisionError" in done.stderr
    assert ERROR_PREFIX not in done.stderr


def test_report_user_errors_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    def user_error() -> int:
        raise ConfigError("params.yaml: train.epochs='ten' is invalid;\nallowed: an integer")

    def bug() -> int:
        raise KeyError("epochs")

    assert report_user_errors(user_error) == EXIT_USER_ERROR
    assert capsys.readouterr().err == f"{ERROR_PREFIX}params.yaml: train.epochs='ten' is invalid; allowed: an integer\n"
    with pytest.raises(KeyError):
        report_user_errors(bug)
    assert report_user_errors(lambda: None) == 0 and report_user_errors(lambda: 3) == 3
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        report_user_errors(user_error)


def test_cli_prints_a_user_error_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    def handler(args: object) -> int:
        raise ConfigError("params.yaml: strategy='x' is invalid; allowed: linear")

    monkeypatch.setattr(list_backbones, "run", handler)
    assert cli.main(["list-backbones"]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{ERROR_PREFIX}params.yaml: strategy='x' is invalid; allowed: linear\n"

    monkeypatch.setattr(list_backbones, "run", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug: the traceback stays
        cli.main(["list-backbones"])


def test_user_error_registry_names_every_project_error() -> None:
    """USER_ERRORS names classes its modules define, and every public ``class ...Error`` in src/ is in it or
    known not to be one (read from the sources: importing them all would take seconds)."""
    pattern = re.compile(r"^class ([A-Z]\w*Error)\(", re.M)
    defined = {}
    for path in (REPO / "src").rglob("*.py"):
        module = ".".join(path.relative_to(REPO / "src").with_suffix("").parts)
        defined.update((name, module) for name in pattern.findall(path.read_text()))
    registered = {name: module for module, names in USER_ERRORS.items() for name in names}
    for name, module in registered.items():
        assert defined.get(name) == module, f"USER_ERRORS: {module}.{name} does not exist"
    assert set(defined) - set(registered) == NOT_USER_ERRORS


def test_sweep_note_keeps_a_stage_one_line_error() -> None:
    """`signflow sweep` notes a failed point's error from its log: the one-line form counts as the error."""
    from signflow.sweep.runner import log_tail

    log = ("Running stage 'train':\n> python stages/train.py\n"
           f"{ERROR_PREFIX}params.yaml: train.epochs='ten' is invalid; allowed: an integer\n"
           "ERROR: failed to reproduce 'train': failed to run: python stages/train.py, exited with 2\n")
    assert log_tail(log).startswith(f"{ERROR_PREFIX}params.yaml: train.epochs='ten'")
