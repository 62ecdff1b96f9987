"""DVC overhead: a no-op ``dvc repro`` vs ``dvc status`` on a built pipeline.

Copies the project's pipeline (params.yaml, dvc.yaml, stages/, src/, .gitignore,
.dvc/config, .dvcignore) into a temporary git + DVC repository, shrinks the
config to a tiny synthetic dataset (a few images per sign type, 32 px, linear
strategy, one epoch), builds it once with ``dvc repro``, then times, alternating,
a ``dvc repro`` that has nothing to do and a ``dvc status``: the first should
cost little more than the second (target ratio <= 1.2), since both only hash
dependencies and compare them with dvc.lock. The one stage a no-op repro still
runs is ``fingerprint`` (``always_changed``: it lists the data source's inputs
outside the project; a few hundred ms, in the ratio).

The stages run the copied ``src/`` (``PYTHONPATH``), so what DVC hashes is
what runs. ``--stages add_unknown`` restricts everything to the data stages.
Usage: ``python benchmarks/bench_repro.py [--quick] [--stages all|add_unknown]``.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from signflow.commands.preset import set_value

import common

RATIO_TARGET = 1.2
# The tiny pipeline: every key exists in params.yaml; values keep each stage to seconds.
TINY_PARAMS = {
    "strategy": "linear",
    "data.source": "synthetic",
    "data.image_size": 32,
    "data.synthetic.tracks_per_class": 10,  # enough tracks that val and test get some of each class
    "data.synthetic.frames_per_track": 2,
    "data.synthetic.max_size": 48,
    "unknown.max_images": 60,
    "unknown.heldout_max_images": 24,
    "train.epochs": 1,
    "train.feature_views": 1,
}
COPIED = ("params.yaml", "dvc.yaml", "stages", "src", ".dvc/config", ".dvcignore", ".gitignore",
          "data/source_fingerprint.json")
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
UP_TO_DATE = "Data and pipelines are up to date."
ALWAYS_RUN = "fingerprint"  # the always_changed stage: it runs on every `dvc repro`, `dvc status` lists it

log = logging.getLogger("bench.repro")


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run ``cmd``; its wall time and combined output; fail loudly with the output's tail."""
    begin = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - begin
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return seconds, out.stdout + out.stderr


def set_params(path: Path, overrides: dict[str, Any]) -> None:
    """Override dotted keys, keeping comments and layout (what DVC parses stays the real file's size)."""
    rt = YAML()  # round-trip mode, the parser DVC itself uses
    rt.width = 4096  # no re-wrapping of long values
    params = rt.load(path)
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"{path} has no {dotted}; update the benchmark's params")
        set_value(node, leaf, value)  # as `signflow preset` does: a commented list may become []
    rt.dump(params, path)


def copy_pipeline(dest: Path) -> None:
    """The files the pipeline needs (``COPIED``), from this checkout's working tree into ``dest``."""
    for name in COPIED:
        source, target = common.REPO / name, dest / name
        if not source.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED)
        else:
            shutil.copy2(source, target)


def is_noop(which: str, text: str) -> bool:
    """Whether a ``dvc repro`` ran, or a ``dvc status`` listed, nothing but the always-run stage."""
    if which == "repro":
        return {line.split("'")[1] for line in text.splitlines() if line.startswith("Running stage '")} <= {ALWAYS_RUN}
    return UP_TO_DATE in text or text.split() == [f"{ALWAYS_RUN}:", "always", "changed"]


def make_project(workdir: Path, params: Path, env: dict[str, str]) -> None:
    """A git + DVC repository holding a copy of the pipeline with the tiny config."""
    copy_pipeline(workdir)
    shutil.copy2(params, workdir / "params.yaml")
    set_params(workdir / "params.yaml", TINY_PARAMS)
    run(["git", "init", "-q"], workdir, env)
    run(["dvc", "init", "-q", "--force"], workdir, env)  # keeps the copied .dvc/config
    shutil.copy2(common.REPO / ".dvc" / "config", workdir / ".dvc" / "config")
    run(["git", "add", "-A"], workdir, env)
    run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "tiny"], workdir, env)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--stages", choices=("all", "add_unknown"), default="all",
                   help="all: the whole pipeline; add_unknown: only the data stages (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary project (its path is logged)")
    args = p.parse_args()
    common.start(args)
    target = [] if args.stages == "all" else [args.stages]
    bin_dir = str(Path(sys.executable).parent)
    tmp = tempfile.mkdtemp(prefix="bench-repro-")
    try:
        workdir = Path(tmp) / "project"
        workdir.mkdir()
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(workdir / "src"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1"}
        make_project(workdir, args.params, env)
        log.info("building the tiny pipeline in %s (dvc repro %s)", workdir, " ".join(target))
        build_s, build_out = run(["dvc", "repro", *target], workdir, env)
        stages = [line.split("'")[1] for line in build_out.splitlines() if line.startswith("Running stage '")]
        log.info("built %s in %.1fs", stages, build_s)

        idle_before = common.wait_for_idle(args.wait_idle)
        watch = common.CpuWatch()
        seconds: dict[str, list[float]] = {"repro": [], "status": []}
        outputs: dict[str, str] = {}
        for rep in range(args.reps):
            for which in ("repro", "status") if rep % 2 == 0 else ("status", "repro"):
                took, outputs[which] = run(["dvc", which, *target], workdir, env)
                seconds[which].append(took)
        for which, text in outputs.items():
            if not is_noop(which, text):
                raise RuntimeError(f"`dvc {which}` after the build is not a no-op:\n{text[-2000:]}")
        others_cores = watch.others_cores()
    finally:
        if args.keep:
            log.info("kept %s", workdir)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    repro_s, status_s = statistics.median(seconds["repro"]), statistics.median(seconds["status"])
    common.emit({
        "benchmark": "repro",
        "stages": stages, "target": args.stages, "tiny_params": TINY_PARAMS, "quick": args.quick, "reps": args.reps,
        "build_s": round(build_s, 1),
        "repro_noop_s": round(repro_s, 3), "status_s": round(status_s, 3),
        "ratio": round(repro_s / status_s, 3), "ratio_target": RATIO_TARGET,
        "repro_noop_s_reps": [round(s, 3) for s in seconds["repro"]],
        "status_s_reps": [round(s, 3) for s in seconds["status"]],
        "dvc_version": subprocess.run(["dvc", "--version"], capture_output=True, text=True,
                                      env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}).stdout.strip(),
        "others_cores_busy_before": idle_before, "others_cores_busy": others_cores,
    })


if __name__ == "__main__":
    main()
