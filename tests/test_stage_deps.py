"""dvc.yaml deps equal each stage's real imports, and the train fingerprint follows the same closure.

A stage whose deps miss a module it runs leaves stale results after that
module changes (`dvc repro` sees nothing to do); a dep it does not run re-runs
it for nothing. The closure is found statically (``signflow.codegraph``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from signflow.codegraph import import_closure, module_file

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("src/", "stages/")


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _script(stage: dict) -> Path:
    return REPO / stage["cmd"].split()[-1]


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith(CODE_ROOTS)]


def _covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(dep.rstrip("/") + "/")


def _closure(stage: dict) -> list[str]:
    return [p.relative_to(REPO).as_posix() for p in import_closure(_script(stage))]


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_cover_exactly_the_modules_the_stage_imports(name: str) -> None:
    stage = _stages()[name]
    closure, deps = _closure(stage), _code_deps(stage)
    missing = [f for f in closure if not any(_covers(d, f) for d in deps)]
    unused = [d for d in deps if not any(_covers(d, f) for f in closure)]
    assert not missing, f"dvc.yaml stage {name!r} runs these modules but does not list them as deps: {missing}"
    assert not unused, f"dvc.yaml stage {name!r} lists deps it never imports (re-runs for nothing): {unused}"
    # A directory dep must not cover files the stage does not run either.
    for dep in deps:
        if (REPO / dep).is_dir():
            extra = sorted(p.relative_to(REPO).as_posix() for p in (REPO / dep).rglob("*.py")
                           if p.relative_to(REPO).as_posix() not in closure)
            assert not extra, f"dvc.yaml stage {name!r}: dep {dep} also covers {extra}, which it never runs"


def test_closure_follows_imports_inside_functions_and_skips_type_checking(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from signflow.serving.batch import Result\n"
        "def main():\n    from signflow.data.raw import materialise\n"
    )
    files = {p.relative_to(REPO).as_posix() for p in import_closure(script) if p != script.resolve()}
    assert "src/signflow/data/raw.py" in files  # imported inside a function
    assert "src/signflow/data/sources/gtsrb.py" in files  # raw.py imports it lazily, inside a registry entry
    assert "src/signflow/data/__init__.py" in files and "src/signflow/__init__.py" in files  # packages run too
    assert "src/signflow/serving/batch.py" not in files  # type-only import: never runs
    assert module_file("numpy") is None and module_file("signflow.nope") is None


def test_config_is_the_ground_floor() -> None:
    """config.py imports no project module but the pure-data catalog, and nothing heavy."""
    files = {p.relative_to(REPO).as_posix() for p in import_closure(REPO / "src/signflow/config.py")}
    assert files == {"src/signflow/__init__.py", "src/signflow/catalog.py", "src/signflow/config.py"}
    probe = "import sys, signflow.config; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                cwd=REPO).stdout.split())
    assert not loaded & {"torch", "cv2", "tqdm", "pandas", "numpy"}


def test_train_fingerprint_follows_the_train_closure_only(tmp_path: Path) -> None:
    """Editing the report leaves the resume fingerprint alone; editing the training loop changes it."""
    from signflow.config import Config
    from signflow.training.stage import fingerprint

    src = tmp_path / "repo"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "stages", src / "stages")
    package = src / "src" / "signflow"
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for split in ("train", "val"):
        (dataset / f"{split}.csv").write_text("path,label_idx\n")
        (dataset / f"{split}.npy").write_bytes(b"")

    def current() -> str:
        return fingerprint(Config(), dataset, import_closure(src / "stages" / "train.py", package))

    before = current()
    with open(package / "evaluation" / "report.py", "a") as fh:
        fh.write("\n# an edit to the report\n")
    assert current() == before
    with open(package / "training" / "loop.py", "a") as fh:
        fh.write("\n# an edit to the loop\n")
    assert current() != before


# ---- plots: each declared once, each drawn from a file the pipeline writes ------------------


def _entry_paths(entries: list) -> list[str]:
    """Paths of a dvc.yaml list whose items are `path` or `{path: {options}}`."""
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def _stage_outputs(kinds: tuple[str, ...] = ("outs", "metrics", "plots")) -> dict[str, list[str]]:
    return {name: [p for kind in kinds for p in _entry_paths(stage.get(kind, []))] for name, stage in _stages().items()}


def _top_level_plot_files() -> list[str]:
    """The files the top-level `plots:` draw: a bare path, or the files under a definition's `y`."""
    files = []
    for entry in yaml.safe_load((REPO / "dvc.yaml").read_text()).get("plots", []):
        if isinstance(entry, str):
            files.append(entry)
            continue
        plot_id, spec = next(iter(entry.items()))
        y = (spec or {}).get("y")
        files.extend(y if isinstance(y, dict) else [plot_id])
    return files


def test_no_plot_is_declared_twice() -> None:
    top = _top_level_plot_files()
    stage_plots = {p for paths in _stage_outputs(("plots",)).values() for p in paths}
    both = sorted(stage_plots & set(top))
    assert not both, f"dvc.yaml: {both} are stage `plots:` and top-level plots: `dvc plots show` draws them twice"


def test_every_top_level_plot_is_a_file_the_pipeline_writes() -> None:
    outputs = [p for paths in _stage_outputs().values() for p in paths]
    for file in _top_level_plot_files():
        written = any(_covers(out, file) for out in outputs)
        assert written or (REPO / file).is_file(), f"dvc.yaml top-level plot {file}: no stage writes it, no such file"


def test_every_report_figure_and_the_reliability_data_are_plots() -> None:
    from signflow import paths
    top = set(_top_level_plot_files())
    figures = sorted((REPO / paths.REPORTS_DIR).glob("*.png"))
    assert figures, f"no committed figures in {paths.REPORTS_DIR}"
    missing = [f.relative_to(REPO).as_posix() for f in figures if f.relative_to(REPO).as_posix() not in top]
    assert not missing, f"report figures not declared as top-level plots in dvc.yaml: {missing}"
    for data in (paths.TRAIN_HISTORY, paths.CONFUSION, paths.ROC, paths.RELIABILITY):
        assert data.as_posix() in top, f"{data} is not a top-level plot in dvc.yaml"


def test_timings_are_metrics_files_apart_from_the_results() -> None:
    """Every JSON a stage writes under metrics/timings/ is a `metrics:` output (`dvc exp show` lists it)."""
    from signflow import paths
    timings = paths.TIMINGS_DIR.as_posix() + "/"
    metrics = _stage_outputs(("metrics",))
    for name, outputs in _stage_outputs(("outs", "plots")).items():
        misplaced = [p for p in outputs if p.startswith(timings) and p.endswith(".json")]
        assert not misplaced, f"dvc.yaml stage {name!r}: timings {misplaced} must be under `metrics:`"
    assert paths.TRAIN_TIMINGS.as_posix() in metrics["train"]
