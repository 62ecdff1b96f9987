"""Config: the real params.yaml loads, and every wrong value names its key, value and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from signflow.catalog import BACKBONE_ENTRIES, STRATEGIES, flatten
from signflow.config import (
    MIN_SYNTHETIC_SIDE,
    WEIGHTS,
    Config,
    ConfigError,
    DataConfig,
    from_mapping,
    load_config,
    load_params,
)

# Keys the docs, Makefile and `dvc exp run -S` examples refer to: DVC refuses to override a missing key.
DOCUMENTED_KEYS = [
    "strategy",
    "data.source",
    "data.classes",
    "data.gtsrb.url",
    "data.gtsrb.md5",
    "data.folder.path",
    "split.seed",
    "unknown.enabled",
    "model.backbone",
    "model.weights",
    "train.epochs",
    "train.distributed.nproc",
    "train.amp",
]


@pytest.fixture(scope="module")
def real_params(repo_root: Path) -> dict[str, Any]:
    return load_params(repo_root / "params.yaml")


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted}: {part!r} missing in params.yaml"
        node = node[part]
    return node


def _with(params: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``params`` with ``dotted`` set to ``value``."""
    out = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def _error(params: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        from_mapping(Config, params)
    return str(info.value)


def test_real_params_load(repo_root: Path) -> None:
    cfg = load_config(repo_root / "params.yaml")
    assert cfg.strategy in STRATEGIES
    assert cfg.model.backbone in BACKBONE_ENTRIES
    assert cfg.data.class_ids and all(isinstance(c, str) for c in cfg.data.class_ids)
    # YAML gives int ids; they must come out as the same strings as the data's class ids.
    assert set(cfg.data.class_ids) == {str(k) for k in load_params(repo_root / "params.yaml")["data"]["classes"]}
    assert all(isinstance(c, str) for c in cfg.unknown.heldout)
    assert abs(sum(cfg.split.fractions.values()) - 1) < 1e-9


def test_load_params_rejects_non_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(path)


@pytest.mark.parametrize("key", DOCUMENTED_KEYS)
def test_documented_key_exists(real_params: dict[str, Any], key: str) -> None:
    _lookup(real_params, key)


def test_dvc_stage_params_exist(repo_root: Path, real_params: dict[str, Any]) -> None:
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    declared = [p for stage in stages.values() for p in stage.get("params", []) if isinstance(p, str)]
    assert declared
    for key in declared:
        _lookup(real_params, key)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("strategy", "foo", list(STRATEGIES)),
        ("model.backbone", "resnt18", list(BACKBONE_ENTRIES)),
        ("data.synthetic.min_size", MIN_SYNTHETIC_SIDE - 1, [f"{MIN_SYNTHETIC_SIDE} <="]),
        ("model.weights", "foo", list(WEIGHTS)),
        ("unknown.max_images", -1, ["0 <="]),
        ("train.lr", -0.001, ["<= value"]),
        ("train.epochs", "ten", ["integer"]),
        ("split.seed", "42x", ["integer"]),
        ("train.lr", "fast", ["number"]),
        ("unknown.enabled", "yes please", ["true | false"]),
    ],
)
def test_bad_value_names_key_value_and_allowed(
    real_params: dict[str, Any], key: str, value: Any, allowed: list[str]
) -> None:
    message = _error(_with(real_params, key, value))
    assert key in message
    assert repr(value) in message
    for choice in allowed:
        assert choice in message


def test_split_fractions_must_sum_to_one(real_params: dict[str, Any]) -> None:
    params = _with(_with(real_params, "split.train", 0.7), "split.val", 0.2)
    params = _with(params, "split.test", 0.2)
    message = _error(params)
    assert "split.train/val/test" in message
    assert "0.7" in message and "0.2" in message
    assert "summing to 1" in message


def test_split_fractions_summing_to_one_pass(real_params: dict[str, Any]) -> None:
    params = _with(_with(_with(real_params, "split.train", 0.6), "split.val", 0.3), "split.test", 0.1)
    cfg = from_mapping(Config, params)
    assert cfg.split.fractions == {"train": 0.6, "val": 0.3, "test": 0.1}


def test_heldout_overlapping_targets_fails(real_params: dict[str, Any]) -> None:
    target = next(iter(real_params["data"]["classes"]))
    message = _error(_with(real_params, "unknown.heldout", [target, 99]))
    assert "unknown.heldout" in message
    assert "data.classes" in message
    assert str(target) in message


def test_unknown_classes_overlapping_targets_fails(real_params: dict[str, Any]) -> None:
    target = next(iter(real_params["data"]["classes"]))
    params = _with(_with(real_params, "unknown.heldout", []), "unknown.classes", [target])
    message = _error(params)
    assert "unknown.classes" in message and "data.classes" in message


def test_unknown_classes_overlapping_heldout_fails(real_params: dict[str, Any]) -> None:
    params = _with(_with(real_params, "unknown.classes", [1, 2, 98]), "unknown.heldout", [98, 99])
    message = _error(params)
    assert "unknown.heldout" in message
    assert "unknown.classes" in message
    assert "98" in message


@pytest.mark.parametrize(
    ("parent", "typo"),
    [("", "stratgy"), ("data", "sourse"), ("data.gtsrb", "urll"), ("train.augment", "hflipp"),
     ("unknown", "max_image")],
)
def test_unknown_key_fails_anywhere(real_params: dict[str, Any], parent: str, typo: str) -> None:
    params = copy.deepcopy(real_params)
    node = params
    for part in filter(None, parent.split(".")):
        node = node[part]
    node[typo] = 1
    message = _error(params)
    dotted = f"{parent}.{typo}" if parent else typo
    assert dotted in message
    assert "known keys" in message
    # the message lists what would have been right
    assert any(name in message for name in node if name != typo)


@pytest.mark.parametrize("text", ["1e-5", "1e-05", "5E-4"])
def test_exponent_floats_without_a_dot_load(tmp_path: Path, real_params: dict[str, Any], text: str) -> None:
    # `dvc exp run -S train.lr=1e-5` writes `lr: 1e-5`, which PyYAML (YAML 1.1) reads as a string.
    params = yaml.safe_dump(_with(real_params, "train.lr", "PLACEHOLDER")).replace("PLACEHOLDER", text)
    (tmp_path / "params.yaml").write_text(params)
    assert load_config(tmp_path / "params.yaml").train.lr == float(text)


@pytest.mark.parametrize("text", ["nan", "inf", "1e", "'1e-5'x"])
def test_non_numeric_strings_for_floats_still_fail(real_params: dict[str, Any], text: str) -> None:
    assert "train.lr" in _error(_with(real_params, "train.lr", text))


def test_section_that_is_not_a_mapping_fails(real_params: dict[str, Any]) -> None:
    message = _error(_with(real_params, "data.gtsrb", "http://example.org/x.zip"))
    assert "data.gtsrb" in message and "url" in message


def test_folder_source_needs_a_path() -> None:
    with pytest.raises(ConfigError, match=r"data\.folder\.path"):
        from_mapping(DataConfig, {"source": "folder", "classes": {1: "a"}}, "data")


def test_config_is_frozen(repo_root: Path) -> None:
    cfg = load_config(repo_root / "params.yaml")
    with pytest.raises(AttributeError):
        cfg.strategy = "full"  # type: ignore[misc]


def test_flatten_gives_dotted_keys(repo_root: Path) -> None:
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}}) == {"a": 1, "b.c": 2, "b.d.e": 3}
    flat = flatten(load_config(repo_root / "params.yaml").to_dict())
    for key in ("strategy", "data.gtsrb.url", "train.lr", "train.augment.hflip", "split.seed"):
        assert key in flat
    assert not any(isinstance(v, dict) for v in flat.values())


def test_dataclass_defaults_match_params_yaml(repo_root: Path) -> None:
    # One source of truth: a library caller that builds Config() gets exactly the
    # pipeline's defaults, so params.yaml and config.py cannot drift apart.
    assert Config() == load_config(repo_root / "params.yaml")
