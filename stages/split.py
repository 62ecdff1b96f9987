"""DVC stage `split`: stratified, track-grouped train/val/test manifests of the target classes."""

from pathlib import Path

from signflow.config import Config, load_config
from signflow.dataset import check_classes, split_records, target_frame
from signflow.io import atomic_path
from signflow.logs import setup_logging
from signflow.records import read_records

INDEX = Path("data/raw/index.csv")
OUT_DIR = Path("data/split")


def main() -> None:
    setup_logging()
    cfg: Config = load_config()
    index = read_records(INDEX)
    check_classes(index, cfg.data.class_ids)
    targets = [r for r in index if r.class_id in cfg.data.classes]
    parts = split_records(targets, cfg.split.fractions, cfg.split.seed, cfg.split.group_by == "track")
    with atomic_path(OUT_DIR) as tmp:
        tmp.mkdir()
        for name, records in parts.items():
            target_frame(records, cfg.data.classes).to_csv(tmp / f"{name}.csv", index=False)


if __name__ == "__main__":
    main()
