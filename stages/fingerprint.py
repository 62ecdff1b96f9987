"""DVC stage `fingerprint`: the data source's external inputs (a folder's files, a mirror file) for `download`.

Always run (DVC cannot see outside the project) and cheap: a stat per file of a folder, no read.
"""

from signflow import paths
from signflow.config import load_config
from signflow.data.fingerprint import update_fingerprint
from signflow.logs import run_stage, setup_logging


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)
    update_fingerprint(cfg.data, paths.SOURCE_FINGERPRINT)


if __name__ == "__main__":
    run_stage(main)
