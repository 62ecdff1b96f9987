"""DVC stage `download`: materialise the raw dataset of `data.source` into data/raw/."""

from pathlib import Path

from signflow.config import DataConfig, from_mapping, load_params
from signflow.logs import setup_logging
from signflow.raw import materialise

RAW_DIR = Path("data/raw")
CACHE_DIR = Path("data/downloads")  # git-ignored; keeps the archive so a re-run does not fetch again


def main() -> None:
    setup_logging()
    cfg = from_mapping(DataConfig, load_params()["data"], "data")
    materialise(cfg, RAW_DIR, CACHE_DIR)


if __name__ == "__main__":
    main()
