"""Scale: cost per image and peak memory of the data stages and one training epoch at 10k, 50k and 200k images.

For each size, a fresh copy of the pipeline (params.yaml, dvc.yaml, stages/,
src/, .dvc/config, ...) in a temporary git + DVC repository, with params set to
the synthetic source with all 43 sign types as targets (``unknown.enabled:
false``, nothing held out, so ``add_unknown`` decodes every image), tracks of 6
frames, 64 px. Each stage runs as its own process, ``python stages/<name>.py``
in the copy (the copied ``src/`` on ``PYTHONPATH``), so its peak memory is its
own: ``download``, ``split``, ``add_unknown``, then ``train`` for one epoch.

The training epoch uses ``mobilenet_v3_small`` from scratch (``strategy:
scratch``, ``model.weights: none``; about 600 img/s here against 290 for
``simple_cnn`` and 210 for ``efficientnet_lite0``): one epoch over 160k images
takes minutes, not most of an hour. It proves that the data path's cost per image and memory are flat (the
memory-mapped arrays, batch rows read on demand), not how fast a model is;
``bench_train.py`` measures the real model.

Then the outputs are recorded in DVC without re-running anything:
``dvc commit -f`` of the four stages (DVC hashes the outputs on disk, caches
them and writes dvc.lock, as after a multi-node run), ``dvc status`` of them
twice (cold: DVC's state database deleted, so every output file is hashed again,
as after a fresh clone; warm: the second call), and ``dvc push`` of the three
data stages to a local directory remote.

Per size, one JSON line: images made, per stage wall seconds and seconds per
image (data stages per image made, ``train`` per training image; the epoch
alone from ``metrics/train.json``), memory per stage, file counts and sizes on
disk, DVC timings. Memory, measured on the stage's process tree:

- ``rss_max_process_mb``: the largest single process, exact: ``ru_maxrss`` over
  the stage and all its descendants, read by a bare wrapper process that starts
  the stage and, as their child subreaper, also reaps the orphans (the decode
  pools' forkserver outlives the stage); its floor is the wrapper's ~12 MB;
- ``rss_tree_peak_mb``: peak of the summed RSS of the stage and all its
  descendants, sampled every 0.2 s (pages shared between processes count twice);
- ``anon_max_process_mb`` / ``anon_tree_peak_mb``: the same samples without
  file-backed pages (RSS - shared). RSS counts the pages of a memory-mapped
  ``.npy`` that the process touched, which the kernel drops under pressure;
  anonymous memory is what really has to fit.

A last line compares the largest size with the smallest: ratios of time per
image (data stages together; the training epoch) and of peak memory of
``add_unknown`` and ``train``; each must be at most 1.5 (a larger dataset may
be cheaper per image, never more than 1.5x dearer).

Needs disk for the largest size: about 10 GB at 200k images (raw data, the
decoded arrays, the DVC cache copy and the remote); each size's copy is deleted
after it is measured (``TMPDIR`` picks the place). The default sizes take about
half an hour on 2 idle cores (most of it the 160k-image epoch), hours on a busy
machine; ``make bench`` runs them too. ``--quick`` (about 1k and 2k images)
checks the script in about 2 minutes.

Usage: ``python benchmarks/bench_scale.py [--sizes 10000 50000 200000] [--quick] [--keep] [--out FILE]``;
one JSON line per size, then the summary line, on stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from bench_repro import COPIED, copy_pipeline, run, set_params

from signflow.data.sources.synthetic.signs import SIGN_TYPES
from signflow.logs import setup_logging

import common

SIZES = (10_000, 50_000, 200_000)
QUICK_SIZES = (1_000, 2_000)
FRAMES_PER_TRACK = 6  # like GTSRB's tracks and the default params
MIN_TRACKS_PER_CLASS = 3  # one track each for train, val and test
IMAGE_SIZE = 64
DATA_STAGES = ("download", "split", "add_unknown")
TRAIN_STAGE = "train"
RATIO_TARGET = 1.5
SAMPLE_S = 0.2  # process-tree memory sampling period
MB = 2**20
REMOTE = "bench"
LOG_TAIL_CHARS = 3000
# The stage's parent: a bare Python that writes the ru_maxrss (KiB) of the stage's whole tree to
# argv[1]. Not this process: at exec, Linux carries the parent's RSS high-water mark into the
# child's ru_maxrss, and this process (torch imported by common.py) is ~800 MB. As a child
# subreaper it inherits the orphans (the pools' forkserver outlives the stage, reaping the decode
# workers), waits for them, so their peaks count too.
WRAPPER = """\
import ctypes, json, os, resource, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
begin = time.perf_counter()
code = subprocess.call(sys.argv[2:])
stage_s = time.perf_counter() - begin
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        if os.waitpid(-1, os.WNOHANG)[0] == 0:
            time.sleep(0.05)
    except ChildProcessError:
        break
with open(sys.argv[1], "w") as f:
    json.dump({"stage_s": stage_s, "orphans_s": time.perf_counter() - begin - stage_s,
               "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, f)
sys.exit(code)
"""

log = logging.getLogger("bench.scale")


# ------------------------------------------------------------------ params


def snake_case(name: str) -> str:
    """A sign's display name as a params.yaml class name: 'beware of ice/snow' -> 'beware_of_ice_snow'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def tracks_for(size: int) -> int:
    """Tracks per class so that 43 classes x tracks x 6 frames is closest to ``size``."""
    return max(MIN_TRACKS_PER_CLASS, round(size / (len(SIGN_TYPES) * FRAMES_PER_TRACK)))


def scale_params(size: int) -> dict[str, Any]:
    """Dotted params.yaml overrides for one size (every key must exist in the file)."""
    return {
        "data.source": "synthetic",
        # Every sign type a target: add_unknown decodes all images, nothing is sampled away.
        "data.classes": {int(k): snake_case(SIGN_TYPES[k].name) for k in sorted(SIGN_TYPES, key=int)},
        "data.image_size": IMAGE_SIZE,
        "data.synthetic.tracks_per_class": tracks_for(size),
        "data.synthetic.frames_per_track": FRAMES_PER_TRACK,
        "unknown.enabled": False,
        "unknown.heldout": [],
        # A cheap model: the epoch measures the data path (memory-mapped batches), not the network.
        "strategy": "scratch",
        "model.backbone": "mobilenet_v3_small",
        "model.weights": "none",
        "train.epochs": 1,
        "train.patience": 0,
        "train.threads": 0,
        "train.distributed.nproc": 1,
    }


# ------------------------------------------------------------------ measuring one stage


class TreeSampler(threading.Thread):
    """Samples the summed and per-process memory of a process's descendants until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.done = pid, threading.Event()
        self.rss_tree = self.anon_tree = self.anon_process = 0
        self.pids: set[int] = set()

    def sample(self) -> None:
        try:
            procs = psutil.Process(self.pid).children(recursive=True)  # the wrapper itself excluded
        except psutil.Error:  # the stage just ended
            return
        rss = anon = 0
        for proc in procs:
            try:
                mem = proc.memory_info()
            except psutil.Error:
                continue
            self.pids.add(proc.pid)
            rss += mem.rss
            anon += mem.rss - mem.shared  # shared = file-backed + shmem resident pages
            self.anon_process = max(self.anon_process, mem.rss - mem.shared)
        self.rss_tree, self.anon_tree = max(self.rss_tree, rss), max(self.anon_tree, anon)

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()


def run_stage(name: str, cwd: Path, env: dict[str, str], log_file: Path) -> dict[str, Any]:
    """``python stages/<name>.py`` in ``cwd``, started by a bare wrapper: wall seconds and peak memory."""
    wrapper_out = log_file.with_suffix(".json")
    command = [sys.executable, "-c", WRAPPER, str(wrapper_out), sys.executable, f"stages/{name}.py"]
    with log_file.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        proc.wait()
        sampler.stop()
    if proc.returncode:
        raise RuntimeError(f"stage {name} failed ({proc.returncode}); {log_file}:\n"
                           f"{log_file.read_text()[-LOG_TAIL_CHARS:]}")
    measured = json.loads(wrapper_out.read_text())
    return {
        "s": round(measured["stage_s"], 2),
        "rss_max_process_mb": round(measured["maxrss_kib"] * 1024 / MB, 1),
        "rss_tree_peak_mb": round(sampler.rss_tree / MB, 1),
        "anon_max_process_mb": round(sampler.anon_process / MB, 1),
        "anon_tree_peak_mb": round(sampler.anon_tree / MB, 1),
        "processes_seen": len(sampler.pids),
        "orphans_wait_s": round(measured["orphans_s"], 2),
    }


# ------------------------------------------------------------------ project and DVC


def snapshot(template: Path, rev: str | None) -> None:
    """Copy the pipeline once: every size then runs the same code, whatever changes in the checkout meanwhile.

    ``rev``: take the files from this git revision (``git archive``) instead of the working tree.
    """
    template.mkdir(parents=True)
    if rev is not None:
        names = [name for name in COPIED
                 if subprocess.run(["git", "cat-file", "-e", f"{rev}:{name}"], cwd=common.REPO).returncode == 0]
        archive = subprocess.run(["git", "archive", "--format=tar", rev, "--", *names], cwd=common.REPO,
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(template, filter="data")
        return
    copy_pipeline(template)


def make_project(template: Path, params: Path, workdir: Path, size: int, env: dict[str, str]) -> None:
    """A git + DVC repository holding the snapshot with this size's params."""
    shutil.copytree(template, workdir)
    shutil.copy2(params, workdir / "params.yaml")
    set_params(workdir / "params.yaml", scale_params(size))
    run(["git", "init", "-q"], workdir, env)
    run(["dvc", "init", "-q", "--force"], workdir, env)  # keeps the copied .dvc/config
    shutil.copy2(template / ".dvc" / "config", workdir / ".dvc" / "config")
    run(["git", "add", "-A"], workdir, env)
    run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "scale"], workdir, env)


def disk_usage(path: Path) -> tuple[int, float]:
    """Files under ``path`` and their size in MB (layout-agnostic: whatever the stage wrote)."""
    files, size = 0, 0
    for root, _, names in os.walk(path):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(root, name)).st_size
    return files, round(size / MB, 1)


def pushed_files(text: str) -> int | None:
    """'N files pushed' from ``dvc push``'s output."""
    match = re.search(r"(\d+) files? pushed", text)
    return int(match.group(1)) if match else None


def record_in_dvc(workdir: Path, env: dict[str, str], site_cache: Path, remote: Path) -> dict[str, Any]:
    """dvc commit of the stages run by hand, dvc status cold and warm, dvc push of the data stages."""
    stages = [*DATA_STAGES, TRAIN_STAGE]
    commit_s, _ = run(["dvc", "commit", "-f", *stages], workdir, env)
    shutil.rmtree(site_cache, ignore_errors=True)  # DVC's state db (hashes by mtime): cold means rehash everything
    status: dict[str, float] = {}
    for which in ("cold", "warm"):
        status[which], text = run(["dvc", "status", *stages], workdir, env)
        if "Data and pipelines are up to date." not in text:
            raise RuntimeError(f"`dvc status` after `dvc commit -f` is not clean:\n{text[-LOG_TAIL_CHARS:]}")
    run(["dvc", "remote", "add", "-d", REMOTE, str(remote)], workdir, env)
    push_s, text = run(["dvc", "push", *DATA_STAGES], workdir, env)
    return {"dvc_commit_s": round(commit_s, 2), "dvc_status_cold_s": round(status["cold"], 2),
            "dvc_status_warm_s": round(status["warm"], 2), "dvc_push_s": round(push_s, 2),
            "dvc_push_files": pushed_files(text)}


# ------------------------------------------------------------------ one size


def measure_size(size: int, template: Path, params: Path, base: Path, wait_idle: float) -> dict[str, Any]:
    """Build one size's project, run its stages, record them in DVC; its JSON line."""
    workdir = base / "project"
    base.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    site_cache = base / "dvc-site"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(workdir / "src"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(site_cache), "GIT_CONFIG_NOSYSTEM": "1"}
    make_project(template, params, workdir, size, env)
    logs = base / "logs"
    logs.mkdir()
    idle_before = common.wait_for_idle(wait_idle)
    watch = common.CpuWatch()
    stages: dict[str, dict[str, Any]] = {}
    for name in [*DATA_STAGES, TRAIN_STAGE]:
        log.info("size %d: %s", size, name)
        stages[name] = run_stage(name, workdir, env, logs / f"{name}.log")
        log.info("size %d: %s took %.1fs, peak %.0f MB (process), %.0f MB (tree)", size, name, stages[name]["s"],
                 stages[name]["rss_max_process_mb"], stages[name]["rss_tree_peak_mb"])
    stages_others_cores = watch.others_cores()

    summary = json.loads((workdir / "metrics" / "data.json").read_text())
    trained = json.loads((workdir / "metrics" / "train.json").read_text())
    made = summary["targets"]["images"] + summary["quarantined"]["count"]
    train_images = summary["splits"]["train"]["images"]
    for name in DATA_STAGES:
        stages[name]["s_per_image"] = round(stages[name]["s"] / made, 7)
    stages[TRAIN_STAGE]["s_per_image"] = round(stages[TRAIN_STAGE]["s"] / train_images, 7)
    data_s = sum(stages[name]["s"] for name in DATA_STAGES)
    raw_files, raw_mb = disk_usage(workdir / "data" / "raw")
    dataset_files, dataset_mb = disk_usage(workdir / "data" / "dataset")

    log.info("size %d: dvc commit, status, push", size)
    dvc = record_in_dvc(workdir, env, site_cache, base / "remote")
    return {
        "benchmark": "scale", "size": size,
        "tracks_per_class": tracks_for(size), "frames_per_track": FRAMES_PER_TRACK, "classes": len(SIGN_TYPES),
        "image_size": IMAGE_SIZE, "images_requested": len(SIGN_TYPES) * tracks_for(size) * FRAMES_PER_TRACK,
        "images": made, "quarantined": summary["quarantined"]["count"], "train_images": train_images,
        "stages": stages,
        "data_s": round(data_s, 2), "data_s_per_image": round(data_s / made, 7),
        "train_epoch_s": trained["train_seconds"],
        "train_epoch_s_per_image": round(trained["train_seconds"] / train_images, 7),
        "train_img_s": trained["images_per_second"],
        "raw_files": raw_files, "raw_mb": raw_mb, "dataset_files": dataset_files, "dataset_mb": dataset_mb,
        **dvc,
        "available_cores": common.available_cores(),
        "others_cores_busy_before": idle_before, "others_cores_busy": stages_others_cores,
    }


def ratio(large: float, small: float) -> float | None:
    return round(large / small, 3) if small else None


def compare(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest size / smallest size for the four targets."""
    small, large = min(lines, key=lambda d: d["images"]), max(lines, key=lambda d: d["images"])
    figures = {
        "data_s_per_image": lambda d: d["data_s_per_image"],
        "train_epoch_s_per_image": lambda d: d["train_epoch_s_per_image"],
        "add_unknown_rss_max_process": lambda d: d["stages"]["add_unknown"]["rss_max_process_mb"],
        "train_rss_max_process": lambda d: d["stages"][TRAIN_STAGE]["rss_max_process_mb"],
        # Not targets, for reading the above: without memory-mapped file pages, and the whole tree.
        "add_unknown_anon_tree_peak": lambda d: d["stages"]["add_unknown"]["anon_tree_peak_mb"],
        "train_anon_tree_peak": lambda d: d["stages"][TRAIN_STAGE]["anon_tree_peak_mb"],
        "add_unknown_rss_tree_peak": lambda d: d["stages"]["add_unknown"]["rss_tree_peak_mb"],
        "dvc_status_warm_s": lambda d: d["dvc_status_warm_s"],
    }
    targets = ("data_s_per_image", "train_epoch_s_per_image", "add_unknown_rss_max_process", "train_rss_max_process")
    out: dict[str, Any] = {"benchmark": "scale_summary", "smallest_images": small["images"],
                           "largest_images": large["images"], "ratio_target": RATIO_TARGET}
    for key, get in figures.items():
        value = ratio(get(large), get(small))
        out[f"{key}_ratio"] = value
        if key in targets:
            out[f"{key}_ok"] = value is not None and value <= RATIO_TARGET
    out["all_ok"] = all(out[f"{key}_ok"] for key in targets)
    return out


# ------------------------------------------------------------------ main


def emit(payload: dict[str, Any], out: Path | None) -> None:
    common.emit(payload)
    if out is not None:
        with out.open("a") as f:
            f.write(json.dumps(payload) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                   help="approximate image counts, one project each (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help=f"sizes {' '.join(map(str, QUICK_SIZES))}, no idle wait: "
                   "checks the script in minutes")
    p.add_argument("--keep", action="store_true", help="keep the temporary projects (their paths are logged)")
    p.add_argument("--out", type=Path, default=None, help="also append every JSON line to this file")
    p.add_argument("--wait-idle", type=float, default=None, metavar="SECONDS",
                   help="before each size, wait up to this long for other processes to leave the CPU "
                        f"(default: {common.DEFAULT_WAIT_IDLE_S:.0f}, 0 with --quick)")
    p.add_argument("--params", type=Path, default=None,
                   help="params file the copies start from (default: the snapshot's params.yaml)")
    p.add_argument("--rev", default=None, metavar="GIT_REV",
                   help="run the pipeline files of this git revision, e.g. HEAD (default: the working tree)")
    args = p.parse_args()
    setup_logging(os.environ.get("SIGNFLOW_LOG", "INFO"))
    sizes = list(QUICK_SIZES) if args.quick else args.sizes
    wait_idle = (0.0 if args.quick else common.DEFAULT_WAIT_IDLE_S) if args.wait_idle is None else args.wait_idle

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    lines = []
    try:
        template = tmp / "template"
        snapshot(template, args.rev)
        params = args.params or template / "params.yaml"
        for size in sizes:
            base = tmp / f"size-{size}"
            begin = time.perf_counter()
            try:
                line = measure_size(size, template, params, base, wait_idle)
            finally:
                if args.keep:
                    log.info("kept %s", base)
                else:
                    shutil.rmtree(base, ignore_errors=True)  # frees the disk before the next size
            log.info("size %d done in %.0fs", size, time.perf_counter() - begin)
            line["code"] = args.rev or "working tree"
            line["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.REPO,
                                              capture_output=True, text=True).stdout.strip()
            lines.append(line)
            emit(line, args.out)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if len(lines) > 1:
        emit(compare(lines), args.out)


if __name__ == "__main__":
    main()
