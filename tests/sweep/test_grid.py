"""signflow.sweep.grid: `-S` and --grid into points on DVC's own grammar, and the checks before queueing.

The last tests queue grids with `dvc exp run --queue -S` itself, in a throw-away
git + DVC copy of the project, and compare what DVC queued with what the sweep plans.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from signflow.sweep import grid
from signflow.sweep.grid import SweepError
from signflow.sweep.runner import experiment_states

from project_copy import Project, copy_project

EXAMPLE_GRID = Path(__file__).with_name("sweep_grid_example.yaml")


def points(*assignments: str, grid_text: str | None = None, prefix: str = grid.DEFAULT_PREFIX) -> list[grid.Point]:
    from_file = [] if grid_text is None else grid.grid_file_overrides(grid_text)
    return grid.expand(grid.merge_overrides(grid.read_grid(assignments), from_file), prefix)


# ------------------------------------------------------------------ reading the grid


def test_comma_syntax_keeps_types_and_order() -> None:
    first, *rest = points("strategy=linear,full", "unknown.enabled=true,false", "train.epochs=1,2",
                          "train.lr=0.01,1e-3", "data.folder.path='a,b',plain", "unknown.heldout=[15,32],[]")
    assert first.values == {"strategy": "linear", "unknown.enabled": True, "train.epochs": 1, "train.lr": 0.01,
                            "data.folder.path": "a,b", "unknown.heldout": [15, 32]}
    assert [type(first.values[key]) for key in ("unknown.enabled", "train.epochs", "train.lr")] == [bool, int, float]
    assert len(rest) == 2**6 - 1
    assert rest[-1].values["train.lr"] == 0.001 and rest[-1].values["unknown.heldout"] == []


def test_range_and_choice_expand_as_hydra_sweeps() -> None:
    planned = points("train.lr=range(0.001,0.004,0.001)", "strategy=choice(full,scratch)")
    assert [(p.values["train.lr"], p.values["strategy"]) for p in planned] == [
        (0.001, "full"), (0.001, "scratch"), (0.002, "full"), (0.002, "scratch"), (0.003, "full"), (0.003, "scratch")]
    assert planned[0].set_args() == ["-S", "train.lr=0.001", "-S", "strategy=full"]
    assert grid.grid_keys(["params.yaml:train.lr=range(1,3)", "strategy=full"]) == ["train.lr", "strategy"]


@pytest.mark.parametrize("value", [0.001, 1e-05, 3, -3, True, False, None, "linear", "a,b", "true", "01", "it's",
                                   "a\\b", "end\\", "", "a b", "1e-3", "x=y", "1.0", [1, "x", True],
                                   {12: "stop", "b": 1}])
def test_grid_file_values_are_spelled_so_dvc_reads_them_back(value: Any) -> None:
    spelled = grid.spell_value(value)
    parsed = OverridesParser.create().parse_overrides([f"key={spelled}"])[0]
    assert not parsed.is_sweep_override(), spelled  # a comma in a value must not turn one point into a sweep
    assert parsed.value() == value and type(parsed.value()) is type(value), spelled


def test_yaml_grid_keeps_types_and_order() -> None:
    planned = points(grid_text="train.lr: [1e-3, 0.01]\nunknown.enabled: [true, false]\ntrain.epochs: [1, 2]\n"
                               "strategy: scratch\n")
    assert [p.values for p in planned[:2]] == [
        {"train.lr": 0.001, "unknown.enabled": True, "train.epochs": 1, "strategy": "scratch"},
        {"train.lr": 0.001, "unknown.enabled": True, "train.epochs": 2, "strategy": "scratch"},
    ]
    assert isinstance(planned[0].values["train.lr"], float) and len(planned) == 8


def test_example_grid_file_parses_and_validates(repo_root: Path, tmp_path: Path) -> None:
    overrides = grid.read_grid([], EXAMPLE_GRID)
    assert sorted({p.values["train.lr"] for p in grid.expand(overrides)}) == [0.0003, 0.001]
    real = yaml.safe_load((repo_root / "params.yaml").read_text())
    real["model"].update(backbone="efficientnet_lite0", weights="imagenet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(real))
    planned = grid.plan_points(tmp_path / "params.yaml", overrides)
    assert len(planned) == 12 and all(point.skip_reason is None for point in planned)


@pytest.mark.parametrize(("text", "message"), [
    ("- 1\n- 2\n", "expected a mapping"),
    ("train: {lr: [0.1]}\n", "dotted params key"),
    ("+train.lr: [0.1]\n", "dotted params key"),
    ("train.lr: [0.1, 0.1]\n", "a value is listed twice"),
    ("train.lr: []\n", "has no values"),
    ("train.lr: [0.1\n", "not valid YAML"),
    ("train.lr: [0.1]\ntrain.lr: [0.2]\n", "given twice"),
    ("train.lr: [2020-01-01]\n", "cannot pass a date"),
])
def test_bad_grid_files_fail_with_one_line(text: str, message: str) -> None:
    with pytest.raises(SweepError, match=message) as err:
        points(grid_text=text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("args", "message"), [
    (["strategy"], "-S 'strategy': Error parsing override"),
    (["strategy=linear,,full"], "-S 'strategy=linear,,full'"),
    (["strategy='linear"], "-S \"strategy='linear\""),
    (["train.lr=glob(*)"], "Glob override .* is not supported"),
    (["train.lr=interval(0,1)"], "does not support sweep type : INTERVAL_SWEEP"),
    (["other.yaml:train.lr=1"], "sets params.yaml keys only"),
    (["train.lr=1", "params.yaml:train.lr=2"], "train.lr is given twice"),
    (["unknown.enabled=true,True"], "sweep-1 and sweep-2 are the same point .*listed twice"),
])
def test_what_dvc_refuses_fails_with_one_line(args: list[str], message: str) -> None:
    with pytest.raises(SweepError, match=message) as err:
        points(*args)
    assert "\n" not in str(err.value)


def test_a_key_given_twice_is_an_error() -> None:
    with pytest.raises(SweepError, match="strategy is given twice"):
        grid.read_grid(["strategy=linear", "strategy=full"])
    with pytest.raises(SweepError, match="train.lr is given both with -S and in --grid"):
        points("train.lr=0.1", grid_text="train.lr: [0.2]")


def test_product_order_is_stable_and_names_are_ref_safe() -> None:
    planned = points("strategy=linear,full", "unknown.enabled=true,false", prefix="lr_grid")
    assert [(p.name, p.values) for p in planned] == [
        ("lr_grid-1", {"strategy": "linear", "unknown.enabled": True}),
        ("lr_grid-2", {"strategy": "linear", "unknown.enabled": False}),
        ("lr_grid-3", {"strategy": "full", "unknown.enabled": True}),
        ("lr_grid-4", {"strategy": "full", "unknown.enabled": False}),
    ]
    for prefix in ("", "-x", "a/b", "a b", "a..b", "x" * 41):
        with pytest.raises(SweepError, match="--prefix"):
            points("strategy=full", prefix=prefix)
    with pytest.raises(SweepError, match="empty grid"):
        grid.expand([])


# ------------------------------------------------------------------ checks before queueing


def test_linear_on_simple_cnn_is_skipped_with_the_reason(params_file: Path) -> None:
    linear, scratch = grid.plan_points(params_file, ["strategy=linear,scratch"])
    assert linear.skip_reason and "simple_cnn" in linear.skip_reason and "scratch" in linear.skip_reason
    assert scratch.skip_reason is None


def test_pretrained_strategy_with_weights_none_is_skipped(params_file: Path) -> None:
    overrides = ["model.backbone=efficientnet_lite0", "strategy=linear,full,scratch"]
    linear, full, scratch = grid.plan_points(params_file, overrides)
    assert "frozen random backbone" in linear.skip_reason
    assert "model.weights=none" in full.skip_reason and scratch.skip_reason is None


def test_all_points_skipped_is_an_error(params_file: Path) -> None:
    with pytest.raises(SweepError, match="all 2 points are skipped"):
        grid.plan_points(params_file, ["strategy=linear,full"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["strategy=scratch,foo"], r"sweep-2 \(strategy=foo\): params.yaml: strategy='foo' is invalid"),
    (["train.lrr=0.1"], r"sweep-1 \(train.lrr=0.1\): Could not override 'train.lrr'"),
    (["+train.lrr=0.1"], "sweep-1 .*train.lrr.* is invalid; allowed: known keys"),
    (["train.epochs=1,0"], "sweep-2 .*train.epochs=0 is invalid"),
    (["train=1"], "sweep-1 .*train=1 is invalid"),
])
def test_invalid_points_name_the_point_and_key(params_file: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(SweepError, match=message) as err:
        grid.plan_points(params_file, overrides)
    assert "\n" not in str(err.value)


def test_seeds_repeat_every_point_with_each_seed_key_set(params_file: Path) -> None:
    planned = grid.plan_points(params_file, ["strategy=linear,scratch", "train.lr=0.01"], seeds=2,
                               seed_keys=["train.seed", "split.seed"])
    assert [(p.name, p.point, p.skip_reason is None) for p in planned] == [
        ("sweep-1-s0", "sweep-1", False), ("sweep-1-s1", "sweep-1", False),  # linear on simple_cnn: skipped
        ("sweep-2-s0", "sweep-2", True), ("sweep-2-s1", "sweep-2", True)]
    assert planned[3].set_args() == ["-S", "strategy=scratch", "-S", "train.lr=0.01", "-S", "train.seed=1",
                                     "-S", "split.seed=1"]
    assert planned[3].values == {"strategy": "scratch", "train.lr": 0.01, "train.seed": 1, "split.seed": 1}
    assert [p.index for p in planned] == [1, 2, 3, 4]
    (single,) = grid.plan_points(params_file, ["train.lr=0.01"], seeds=1)
    assert single.name == "sweep-1" and single.point == "sweep-1" and single.group == ""


def test_a_seed_key_in_the_grid_groups_points_by_the_other_keys(params_file: Path) -> None:
    planned = grid.plan_points(params_file, ["train.lr=0.01,0.1", "train.seed=7,42"], prefix="lr")
    assert [(p.name, p.point, p.values["train.lr"]) for p in planned] == [
        ("lr-1-s7", "lr-1", 0.01), ("lr-1-s42", "lr-1", 0.01), ("lr-2-s7", "lr-2", 0.1), ("lr-2-s42", "lr-2", 0.1)]
    with pytest.raises(SweepError, match="train.seed is in the grid and --seeds 3 is given"):
        grid.plan_points(params_file, ["train.lr=0.01", "train.seed=0,1"], seeds=3)


@pytest.mark.parametrize(("keys", "message"), [
    (["train.seed", "train.seed"], "--seed-keys 'train.seed,train.seed': give distinct"),
    ([""], "--seed-keys ''"),
    (["train.sead"], "train.sead"),  # not a params key: the point fails validation, before anything is queued
])
def test_bad_seed_keys_fail_before_queueing(params_file: Path, keys: list[str], message: str) -> None:
    with pytest.raises(SweepError, match=message):
        grid.plan_points(params_file, ["train.lr=0.01"], seeds=2, seed_keys=keys)


def test_exponent_floats_reach_the_config_as_floats(params_file: Path) -> None:
    """DVC writes `lr: 1e-05` (YAML 1.2); signflow.config's loader reads that as the float it is."""
    (point,) = grid.plan_points(params_file, ["train.lr=1e-5"])
    assert point.values == {"train.lr": 1e-05} and point.skip_reason is None


# ------------------------------------------------------------------ the same points as `dvc exp run --queue -S`


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Project:
    """A git + DVC copy of the project with one commit: enough to queue experiments (none is run)."""
    proj = copy_project(repo_root, tmp_path_factory.mktemp("dvc-grid"))
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-q", "-m", "baseline")
    return proj


@pytest.mark.slow
@pytest.mark.parametrize("assignments", [
    ["train.lr=range(0.001,0.004,0.001)"],
    ["train.lr=range(0.001,0.004,0.001)", "strategy=choice(full,scratch)"],
], ids=["range", "range-choice"])
def test_plans_the_points_dvc_queues(committed: Project, assignments: list[str]) -> None:
    """Queued, never run: `dvc exp run --queue -n <prefix> -S ...` names its points <prefix>-1, -2, ... as a
    sweep does, and `dvc exp show` lists each with its params.yaml."""
    prefix = "grid"
    args = [arg for assignment in assignments for arg in ("-S", assignment)]
    committed.dvc("exp", "run", "--queue", "-n", prefix, *args)
    try:
        head = committed.run("git", "rev-parse", "HEAD").stdout.strip()
        queued = experiment_states(json.loads(committed.dvc("exp", "show", "--json", "--no-fetch").stdout), head)
    finally:
        committed.dvc("queue", "remove", "--all")
    planned = grid.plan_points(committed.root / "params.yaml", grid.read_grid(assignments), prefix)

    def lookup(params: dict[str, Any], dotted: str) -> Any:
        for part in dotted.split("."):
            params = params[part]
        return params

    keys = grid.grid_keys(grid.read_grid(assignments))
    dvc_points = {name: {key: lookup(state.params, key) for key in keys} for name, state in queued.items()}
    assert dvc_points == {point.name: point.values for point in planned}
    assert [point.values["train.lr"] for point in planned[:: len(planned) // 3]] == [0.001, 0.002, 0.003]
