"""``signflow mlflow-server`` (and ``make mlflow-server``): the team's MLflow tracking server.

A real tracking server, not a file store: a SQL backend store (a SQLite file by
default; PostgreSQL or MySQL by URI for teams) and proxied artifact storage
(``--artifacts-destination``: a local folder by default, ``s3://bucket/path``
for teams), so clients need only the server's URL, never the store's
credentials. It binds 127.0.0.1 unless told otherwise and prints the
``MLFLOW_TRACKING_URI`` to export. Tests start it with :func:`server_command`,
the same command this subcommand runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback: exposing a tracking server is a deliberate choice (--host 0.0.0.0)
DEFAULT_PORT = 5000
DEFAULT_DIR = Path("mlflow-server")  # git-ignored: the SQLite store and the artifacts
DEFAULT_WORKERS = 2  # request workers; MLflow's default of 4 is more than a 2-core machine needs
BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"
ARTIFACTS_ENV = "MLFLOW_ARTIFACTS_DESTINATION"


def default_backend_store(directory: Path = DEFAULT_DIR) -> str:
    return f"sqlite:///{(directory / 'mlflow.db').resolve()}"


def default_artifacts(directory: Path = DEFAULT_DIR) -> str:
    return str((directory / "artifacts").resolve())


def server_command(
    port: int, backend_store_uri: str, artifacts_destination: str, host: str = DEFAULT_HOST,
    workers: int = DEFAULT_WORKERS,
) -> list[str]:
    """The ``mlflow server`` command line: SQL backend store, proxied artifacts."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", host, "--port", str(port), "--workers", str(workers),
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--serve-artifacts",
    ]


def tracking_uri(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_PORT", DEFAULT_PORT)),
                        help="port (default: $MLFLOW_PORT or %(default)s)")
    parser.add_argument("--backend-store-uri", default=os.environ.get(BACKEND_ENV),
                        help=f"SQL store: sqlite:///path.db (default: ${BACKEND_ENV} or {DEFAULT_DIR}/mlflow.db), "
                             "postgresql://user@host/db")
    parser.add_argument("--artifacts-destination", default=os.environ.get(ARTIFACTS_ENV),
                        help=f"where the server stores artifacts (default: ${ARTIFACTS_ENV} or "
                             f"{DEFAULT_DIR}/artifacts); s3://bucket/path for a team")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="request workers (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Run the server in the foreground until interrupted; its exit code is ours."""
    backend = args.backend_store_uri or default_backend_store()
    artifacts = args.artifacts_destination or default_artifacts()
    if backend.startswith("sqlite:///"):
        Path(backend.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(args.host, args.port)
    print(f"export MLFLOW_TRACKING_URI={uri}", flush=True)
    log.info("MLflow server: backend store %s, artifacts %s; Ctrl-C stops it", backend, artifacts)
    command = server_command(args.port, backend, artifacts, args.host, args.workers)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
