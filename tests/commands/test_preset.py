"""`signflow preset`: the gtsrb43 benchmark switch, the merge rule, refused presets, and predict at 43 classes.

Every test edits a copy of the repository's real params.yaml with the real
presets/ directory, through the CLI as a user runs it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from signflow.catalog import flatten
from signflow.cli import EXIT_OK, EXIT_USAGE, main
from signflow.commands import preset as presets
from signflow.config import Config, load_config, load_params
from signflow.data.sources.synthetic.signs import SIGN_TYPES
from signflow.evaluation import plots
from signflow.model.checkpoint import save_checkpoint
from signflow.model.inference import load_model
from signflow.training.stage import build_model, checkpoint_meta

GTSRB_CLASSES = 43
IMAGE_SIZE = 32
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMMENT = re.compile(r"(?:^|\s)(#.*)$")


@pytest.fixture
def params(repo_root: Path, tmp_path: Path) -> Path:
    """A copy of the repository's params.yaml in an otherwise empty directory."""
    path = tmp_path / "params.yaml"
    shutil.copyfile(repo_root / "params.yaml", path)
    return path


def _preset(capsys: pytest.CaptureFixture[str], params: Path, presets_dir: Path, *argv: str) -> tuple[int, str]:
    code = main(["preset", *argv, "--params", str(params), "--presets-dir", str(presets_dir)])
    return code, capsys.readouterr().err


def _preset_keys(preset: dict, section: type = Config, prefix: str = "") -> list[str]:
    """The dotted keys a preset sets: sections are walked into, anything else is one value."""
    keys = []
    for key, value in preset.items():
        sub = presets.section_type(section, key)
        if sub is not None and isinstance(value, dict):
            keys += _preset_keys(value, sub, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _comments(text: str) -> list[str]:
    return [m.group(1).strip() for line in text.splitlines() if (m := COMMENT.search(line))]


# ------------------------------------------------------------------ gtsrb43


def test_gtsrb43_switches_to_the_full_benchmark(capsys, caplog, params, repo_root):
    before_text, before = params.read_text(), load_params(params)
    with caplog.at_level(logging.INFO, logger=presets.__name__):
        code, err = _preset(capsys, params, repo_root / "presets", "gtsrb43")
    assert code == EXIT_OK, err
    cfg = load_config(params)
    assert cfg.data.source == "gtsrb"
    assert cfg.data.class_ids == [str(i) for i in range(GTSRB_CLASSES)]  # replaced, not 4 + 43
    assert cfg.class_names == cfg.data.class_names  # no "unknown" output
    assert not cfg.unknown.enabled and cfg.unknown.heldout == () and cfg.unknown.classes == ()
    assert cfg.data.gtsrb.official_test
    # Comments survive, and every key the preset does not set keeps its value.
    after_text = params.read_text()
    assert _comments(before_text) == _comments(after_text)
    set_keys = _preset_keys(yaml.safe_load((repo_root / "presets/gtsrb43.yaml").read_text()))
    flat_before, flat_after = flatten(before), flatten(load_params(params))
    untouched = [k for k in flat_before if not any(k == s or k.startswith(f"{s}.") for s in set_keys)]
    assert untouched and {k: flat_after[k] for k in untouched} == {k: flat_before[k] for k in untouched}
    assert [k for k in flat_after if k in untouched] == untouched  # in the same order
    for key in ("data.source", "data.classes", "unknown.enabled", "unknown.heldout"):
        assert any(m.startswith(f"{key}: ") for m in caplog.messages), key  # each changed key is logged
    assert not any(m.startswith("model.") for m in caplog.messages)  # and only those


def test_gtsrb43_file_is_what_the_generator_writes(repo_root):
    """The names have one source, the renderer's catalogue: the checked-in preset must match it."""
    assert (repo_root / "presets" / "gtsrb43.yaml").read_text() == presets.gtsrb43_text(), (
        "presets/gtsrb43.yaml is stale: run `python -m signflow.commands.preset`")
    classes = yaml.safe_load(presets.gtsrb43_text())["data"]["classes"]
    assert list(classes) == sorted(int(i) for i in SIGN_TYPES)
    assert [classes[int(i)] for i in SIGN_TYPES] == [presets.snake_case(s.name) for s in SIGN_TYPES.values()]
    assert all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", name) for name in classes.values())


def test_generator_writes_every_generated_preset(tmp_path):
    written = presets.write_generated(tmp_path)
    assert {p.stem for p in written} == set(presets.GENERATED)
    assert all(p.read_text() == presets.GENERATED[p.stem]() for p in written)


def test_default_undoes_every_preset_byte_for_byte_as_dvc_writes_it(capsys, params, repo_root):
    """default sets every key any preset sets, so applying it afterwards restores the file."""
    from dvc.utils.serialize import dumps_yaml, parse_yaml_for_update

    presets_dir = repo_root / "presets"
    default_keys = set(_preset_keys(yaml.safe_load((presets_dir / "default.yaml").read_text())))
    original = load_config(params)
    for name in presets.list_presets(presets_dir):
        assert set(_preset_keys(yaml.safe_load((presets_dir / f"{name}.yaml").read_text()))) <= default_keys, name
        assert _preset(capsys, params, presets_dir, name)[0] == EXIT_OK
        assert _preset(capsys, params, presets_dir, "default")[0] == EXIT_OK
        assert load_config(params) == original, name
    # Formatting: exactly what `dvc exp run -S` would make of the original file (it uses ruamel too).
    as_dvc_writes = dumps_yaml(parse_yaml_for_update((repo_root / "params.yaml").read_text(), "params.yaml"))
    assert params.read_text() == as_dvc_writes


def test_reapplying_writes_nothing(capsys, caplog, params, repo_root):
    assert _preset(capsys, params, repo_root / "presets", "gtsrb43")[0] == EXIT_OK
    text, mtime = params.read_bytes(), params.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger=presets.__name__):
        code, _ = _preset(capsys, params, repo_root / "presets", "gtsrb43")
    assert code == EXIT_OK and any("nothing written" in m for m in caplog.messages)
    assert params.read_bytes() == text and params.stat().st_mtime_ns == mtime


def test_list_shows_every_preset_with_its_description(capsys, params, repo_root):
    assert main(["preset", "--list", "--params", str(params), "--presets-dir", str(repo_root / "presets")]) == EXIT_OK
    lines = capsys.readouterr().out.strip().splitlines()
    names = sorted(p.stem for p in (repo_root / "presets").glob("*.yaml"))
    assert [line.split()[0] for line in lines] == names
    assert all(len(line.split()) > 1 for line in lines)  # a description each


# ------------------------------------------------------------------ merge rule


def test_sections_merge_values_replace(capsys, params, tmp_path):
    presets_dir = tmp_path / "mine"
    presets_dir.mkdir()
    (presets_dir / "two.yaml").write_text(
        "# two classes, mirrored augmentation\n"
        "data:\n  classes:\n    1: speed_limit_30\n    2: speed_limit_50\n"
        "train:\n  augment:\n    hflip: true\n"
        "unknown:\n  heldout: [40]\n"
    )
    before = load_config(params)
    assert _preset(capsys, params, presets_dir, "two")[0] == EXIT_OK
    after = load_config(params)
    assert after.data.classes == {"1": "speed_limit_30", "2": "speed_limit_50"}  # a value: replaced whole
    assert after.unknown.heldout == ("40",)  # a list: replaced whole
    assert after.train.augment.hflip  # a section: merged key by key...
    assert dataclasses.replace(after.train.augment, hflip=before.train.augment.hflip) == before.train.augment
    assert dataclasses.replace(after.data, classes=before.data.classes) == before.data  # ...the rest untouched
    assert (after.train.lr, after.model, after.split) == (before.train.lr, before.model, before.split)


# ------------------------------------------------------------------ refused presets


@pytest.mark.parametrize(("body", "key"), [
    ("train:\n  lr: fast\n", "train.lr"),
    ("data:\n  classes:\n    0: a\nunknown:\n  heldout: [0]\n", "unknown.heldout"),
    ("trian:\n  lr: 0.1\n", "trian"),
    ("data:\n  gtsrb:\n    official_test: maybe\n", "data.gtsrb.official_test"),
])
def test_invalid_preset_leaves_params_byte_identical(capsys, params, tmp_path, body, key):
    presets_dir = tmp_path / "mine"
    presets_dir.mkdir()
    (presets_dir / "bad.yaml").write_text(body)
    before = params.read_bytes()
    code, err = _preset(capsys, params, presets_dir, "bad")
    assert code == EXIT_USAGE
    assert f"{key}=" in err and "bad" in err and len(err.strip().splitlines()) == 1
    assert params.read_bytes() == before
    assert sorted(p.name for p in params.parent.iterdir()) == ["mine", "params.yaml"]  # no temporary left


def test_malformed_preset_yaml_names_the_file(capsys, params, tmp_path):
    presets_dir = tmp_path / "mine"
    presets_dir.mkdir()
    (presets_dir / "broken.yaml").write_text("data: [unclosed\n")
    before = params.read_bytes()
    code, err = _preset(capsys, params, presets_dir, "broken")
    assert code == EXIT_USAGE and "broken.yaml" in err
    assert params.read_bytes() == before


def test_unknown_preset_lists_the_available_ones(capsys, params, repo_root):
    before = params.read_bytes()
    code, err = _preset(capsys, params, repo_root / "presets", "gtsrb44")
    assert code == EXIT_USAGE and "gtsrb44" in err
    for name in presets.list_presets(repo_root / "presets"):
        assert name in err
    code, err = _preset(capsys, params, repo_root / "presets", "../params")  # names, never paths
    assert code == EXIT_USAGE
    assert params.read_bytes() == before


# ------------------------------------------------------------------ predict at 43 classes


def test_predict_with_a_43_class_checkpoint(capsys, params, repo_root, tmp_path, make_image_folder):
    """A checkpoint built from the preset's config: predict lists 43 probabilities and plots the top bars."""
    assert _preset(capsys, params, repo_root / "presets", "gtsrb43")[0] == EXIT_OK
    cfg = load_config(params)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone="simple_cnn", weights="none"),
                              data=dataclasses.replace(cfg.data, image_size=IMAGE_SIZE))
    torch.manual_seed(0)
    model = build_model(cfg)
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(checkpoint, {**checkpoint_meta(cfg, model), "model": model.state_dict(), "epoch": 0})
    assert len(load_model(checkpoint).class_names) == GTSRB_CLASSES

    images = make_image_folder("images", classes=("a",), tracks=2, frames=2)
    png = tmp_path / "probs.png"
    code = main(["predict", str(images), "--model", str(checkpoint), "--threshold", "0.5", "--json",
                 "--top-k", "5", "--plot", str(png)])
    results = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and len(results) == 4
    for r in results:
        assert list(r["probabilities"]) == cfg.class_names
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert len(r["top_k"]) == 5
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    # The chart caps its bars: one row of image pairs is as tall at 43 classes as at MAX_BARS classes.
    capped = tmp_path / "capped.png"
    names = cfg.class_names[: plots.MAX_BARS]
    plots.plot_probability_bars([None] * 4, torch.softmax(torch.randn(4, len(names)), 1).numpy(), names,
                                ["x"] * 4, capped, 0.5)
    import cv2  # only for this size comparison

    assert cv2.imread(str(png)).shape == cv2.imread(str(capped)).shape
