"""Data whose cost per image stays flat: streamed decode into the .npy, batches read from the memory map.

The add_unknown stage decodes each image straight into a memory-mapped
``.npy`` (the same bytes ``np.save`` writes), and training reads only each
batch's rows of the split, so neither holds the whole (N, S, S, 3) array in RAM.
Every result must be identical to the in-memory path's.
"""

from __future__ import annotations

import dataclasses
import io
import tracemalloc
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from numpy.lib.format import open_memmap

from signflow.config import Config, load_config
from signflow.data.arrays import load_split, release_resident, write_split, write_split_streamed
from signflow.data.decode import DECODE_CHUNK, decode_frame, decode_into
from signflow.data.images import ImageLimits
from signflow.data.manifest import HELDOUT_LABEL_IDX, ROLE_HELDOUT, ROLE_TARGET, to_frame
from signflow.data.records import RawRecord
from signflow.parallel import bounded_map, process_pool
from signflow.runtime import configure_runtime
from signflow.training.loop import ArraySet, Checkpoints, extract_features, fit
from signflow.training.stage import build_model, checkpoint_meta, load_labelled

LIMITS = ImageLimits(min_side=8, max_side=4096)
SIZE = 32
CLASSES = {"0": "red", "1": "green", "2": "blue"}
PEAK_GROWTH_LIMIT = 1.5  # peak memory at 4N images over the peak at N: flat, not 4x


def _npy_bytes(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images)
    return buffer.getvalue()


def _records(root: Path) -> list[RawRecord]:
    return [RawRecord(str(p.relative_to(root)), p.parent.name, p.stem[:5], 0, 0, 2, 3, 14, 15)
            for p in sorted(root.rglob("*.png"))]


# ---- (a) the streamed .npy is np.save's file --------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 7])
def test_streamed_npy_bytes_equal_np_save(tmp_path: Path, n: int) -> None:
    images = np.random.default_rng(n).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    frame = to_frame([RawRecord(f"0/{i}.png", "0", "00000") for i in range(n)], "x", 0, ROLE_TARGET)

    def fill(out: np.ndarray) -> None:
        for i, image in enumerate(images):
            out[i] = image

    write_split_streamed(tmp_path / "streamed", "train", frame, SIZE, fill)
    write_split(tmp_path / "saved", "train", frame, images)

    assert (tmp_path / "streamed" / "train.npy").read_bytes() == _npy_bytes(images)
    for name in ("train.npy", "train.csv"):
        assert (tmp_path / "streamed" / name).read_bytes() == (tmp_path / "saved" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "streamed").iterdir()) == ["train.csv", "train.npy"]  # no temporaries


@pytest.mark.parametrize("workers", [1, 2])
def test_decode_into_memmap_equals_decode_frame(image_folder: Path, tmp_path: Path, workers: int) -> None:
    records = _records(image_folder)
    rows = (records * (DECODE_CHUNK // len(records) + 2))[: DECODE_CHUNK + 7]  # enough for the pool
    frame = to_frame(rows, "x", 0, ROLE_TARGET)
    fill = partial(decode_into, frame=frame, raw_root=image_folder, roi_crop=True, workers=workers, limits=LIMITS)

    write_split_streamed(tmp_path, "val", frame, SIZE, fill)

    expected = decode_frame(frame, image_folder, SIZE, True, workers=1, limits=LIMITS)
    assert (tmp_path / "val.npy").read_bytes() == _npy_bytes(expected)


def test_decode_into_refuses_a_wrong_output(image_folder: Path) -> None:
    frame = to_frame(_records(image_folder)[:3], "x", 0, ROLE_TARGET)
    with pytest.raises(ValueError, match="uint8"):
        decode_into(np.empty((2, SIZE, SIZE, 3), np.uint8), frame, image_folder, False, 1, LIMITS)


# ---- (b) decoding memory does not grow with the number of images ------------------------------


def _decode_peak(frame: pd.DataFrame, root: Path, out_path: Path) -> int:
    """Peak traced bytes (Python and numpy allocations) while decoding ``frame`` into a memory map."""
    out = open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(frame), SIZE, SIZE, 3))
    tracemalloc.start()
    try:
        decode_into(out, frame, root, False, workers=1, limits=LIMITS)
        out.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del out
    return peak


def test_decode_peak_memory_is_flat(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    (root / "0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = 64
    for i in range(files):
        assert cv2.imwrite(str(root / "0" / f"{i:05d}.png"), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    # Rows repeat the files: the paths are interned once, so only the number of images varies.
    records = _records(root)
    n = 512  # 4n images are 6 MB decoded, far more than one chunk (DECODE_CHUNK images)
    frames = {k: to_frame((records * (k // files))[:k], "x", 0, ROLE_TARGET) for k in (files, n, 4 * n)}
    _decode_peak(frames[files], root, tmp_path / "warm.npy")  # first-use caches (PIL plugins, imports)

    peak_n = _decode_peak(frames[n], root, tmp_path / "n.npy")
    peak_4n = _decode_peak(frames[4 * n], root, tmp_path / "4n.npy")

    full_array = 4 * n * SIZE * SIZE * 3
    print(f"decode peak: {n} images {peak_n} B, {4 * n} images {peak_4n} B (array {full_array} B)")
    assert peak_4n < PEAK_GROWTH_LIMIT * peak_n
    assert peak_4n < full_array / 4
    assert np.array_equal(np.load(tmp_path / "4n.npy")[: n], np.load(tmp_path / "n.npy"))


# ---- (c, d) training reads the memory map's rows: same tensors, same weights ------------------


def _labelled_dataset(root: Path) -> Path:
    """A train and a val split on disk, held-out rows (label -1) scattered among the labelled ones."""
    rng = np.random.default_rng(0)
    dataset = root / "dataset"
    for name, per_class in (("train", 8), ("val", 4)):
        parts = [to_frame([RawRecord(f"{c}/{name}_{i}.png", c, "00000") for i in range(per_class)], label, int(c),
                          ROLE_TARGET) for c, label in CLASSES.items()]
        parts.append(to_frame([RawRecord(f"9/{name}_{i}.png", "9", "00000") for i in range(5)], "unknown",
                              HELDOUT_LABEL_IDX, ROLE_HELDOUT))
        frame = pd.concat(parts, ignore_index=True)
        frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
        images = rng.integers(0, 256, (len(frame), SIZE, SIZE, 3), dtype=np.uint8)
        for i, label in enumerate(frame["label_idx"]):  # a learnable signal: a bright square per class
            if label >= 0:
                images[i, 4 * label : 4 * label + 12, 8:20] = 255
        write_split(dataset, name, frame, images)
    return dataset


def _old_style(dataset: Path, split: str) -> ArraySet:
    """What load_labelled returned before: the kept rows copied into RAM."""
    frame, images = load_split(dataset, split)
    keep = (frame["label_idx"] >= 0).to_numpy()
    return ArraySet(np.asarray(images[keep]), frame["label_idx"].to_numpy()[keep])


@pytest.fixture
def cfg(repo_root: Path) -> Config:
    base = load_config(repo_root / "params.yaml")
    return dataclasses.replace(
        base,
        strategy="full",
        data=dataclasses.replace(base.data, classes=CLASSES, image_size=SIZE),
        unknown=dataclasses.replace(base.unknown, enabled=False, classes=(), heldout=()),
        model=dataclasses.replace(base.model, backbone="simple_cnn", weights="none"),
        train=dataclasses.replace(base.train, epochs=1, batch_size=8, threads=1, device="cpu", patience=0),
    )


@pytest.fixture
def device(cfg: Config) -> torch.device:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield configure_runtime(cfg.train)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def test_load_labelled_keeps_the_memory_map(tmp_path: Path) -> None:
    dataset = _labelled_dataset(tmp_path)
    frame, val = load_labelled(dataset, "val")

    # No copy: the set's images are the memory map of the whole split file, held-out rows included.
    assert isinstance(val.source, np.memmap) and Path(val.source.filename) == (dataset / "val.npy").resolve()
    assert len(val.source) == len(load_split(dataset, "val")[0]) == 3 * 4 + 5
    assert val.rows is not None and len(val.rows) == len(val) == len(frame) == 3 * 4
    old = _old_style(dataset, "val")
    assert np.array_equal(val.labels, old.labels) and np.array_equal(val.images, old.images)
    idx = torch.tensor([5, 0, 11, 3])
    assert torch.equal(val.batch(idx), torch.from_numpy(old.images)[idx])


def test_load_labelled_every_row_kept_has_no_index(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    frame = to_frame([RawRecord(f"0/{i}.png", "0", "00000") for i in range(4)], "red", 0, ROLE_TARGET)
    write_split(dataset, "train", frame, np.zeros((4, SIZE, SIZE, 3), np.uint8))
    _, train = load_labelled(dataset, "train")
    assert train.rows is None and isinstance(train.source, np.memmap) and len(train) == 4


def test_training_on_the_memory_map_gives_identical_weights(tmp_path: Path, cfg: Config, device) -> None:
    dataset = _labelled_dataset(tmp_path)
    runs = {"mmap": (load_labelled(dataset, "train")[1], load_labelled(dataset, "val")[1]),
            "copy": (_old_style(dataset, "train"), _old_style(dataset, "val"))}
    assert runs["mmap"][0].rows is not None  # held-out rows are skipped through the index
    states, histories = {}, {}
    for name, (train, val) in runs.items():
        torch.manual_seed(0)
        model = build_model(cfg)
        result = fit(model, train, val, strategy=cfg.strategy, cfg=cfg.train, device=device,
                     checkpoints=Checkpoints(tmp_path / name, checkpoint_meta(cfg, model), "f"))
        states[name] = model.state_dict()
        histories[name] = [dataclasses.replace(h, seconds=0.0) for h in result.history]

    assert histories["mmap"] == histories["copy"]
    assert states["mmap"].keys() == states["copy"].keys()
    assert all(torch.equal(states["mmap"][k], states["copy"][k]) for k in states["copy"])


def test_features_from_the_memory_map_are_identical(tmp_path: Path, cfg: Config, device) -> None:
    dataset = _labelled_dataset(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    kwargs = {"views": 2, "augment": cfg.train, "seed": 1}
    mmap = extract_features(model, load_labelled(dataset, "val")[1], model.normalization, device, **kwargs)
    copy = extract_features(model, _old_style(dataset, "val"), model.normalization, device, **kwargs)
    assert torch.equal(mmap, copy)


# ---- (d) pages read or written through a map leave the process's RSS -------------------------


def _mapped_rss_kb(path: Path) -> int:
    """Resident KB of this process's mappings of ``path`` (/proc/self/smaps); what ru_maxrss would count."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split(" ", 1)[0]:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_reading_and_writing_a_map_keeps_its_pages_out_of_rss(tmp_path: Path) -> None:
    """A pass over a 12 MB split ends with almost none of it resident; the bytes are all there."""
    n, batch = 1000, 64
    images = np.random.default_rng(3).integers(0, 256, (n, SIZE * 2, SIZE * 2, 3), dtype=np.uint8)
    path = tmp_path / "big.npy"
    out = open_memmap(path, mode="w+", dtype=np.uint8, shape=images.shape)
    for start in range(0, n, batch):
        out[start:start + batch] = images[start:start + batch]
    assert _mapped_rss_kb(path) > images.nbytes // 1024 // 2  # without a release, written pages stay resident
    release_resident(out)
    assert _mapped_rss_kb(path) < 64
    out.flush()
    del out

    data = ArraySet(np.load(path, mmap_mode="r"), np.zeros(n, dtype=np.int64))
    order = np.random.default_rng(0).permutation(n)
    for start in range(0, n, batch):
        idx = order[start:start + batch]
        assert np.array_equal(data.batch(idx).numpy(), images[idx])
        # at most about one batch (12 KB per image) may be resident at any time
        assert _mapped_rss_kb(path) <= batch * images[0].nbytes // 1024 + 64


def test_bounded_map_keeps_order_and_takes_one_window_of_jobs_at_a_time() -> None:
    """ProcessPoolExecutor.map would pull all 1,000 jobs at once; the window pulls 64."""
    pulled = []

    def jobs():
        for i in range(1000):
            pulled.append(i)
            yield -i

    with process_pool(1) as pool:
        results = bounded_map(pool, abs, jobs(), chunksize=8, window=64)
        assert next(results) == 0 and len(pulled) == 64
        assert [0, *results] == list(range(1000))
