"""DVC stage `download`: materialise the raw dataset of `data.source` into data/raw/."""

from signflow import paths
from signflow.config import load_config
from signflow.data.raw import materialise
from signflow.logs import run_stage, setup_logging


def main() -> None:
    setup_logging()
    # The whole file is validated, not only `data`: a misspelled model.backbone fails here, before any work.
    cfg = load_config(paths.PARAMS)
    materialise(cfg.data, paths.RAW_DIR, paths.DOWNLOAD_CACHE)


if __name__ == "__main__":
    run_stage(main)
