"""A real ``mlflow models serve`` process on a free loopback port, for the serving tests, and a JSON POST to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from http_server import LOOPBACK, free_port

SERVE_TIMEOUT_S = 180.0  # start-up, the model's load included
REQUEST_TIMEOUT_S = 60.0


@contextmanager
def serve_model(model_uri: str, cwd: Path, env: Mapping[str, str]) -> Iterator[str]:
    """``mlflow models serve -m model_uri --env-manager local`` (``mlflow`` from ``env``'s PATH); its base URL."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    # A file, not a pipe: a server that logs more than a pipe holds would block on it.
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
             "--host", LOOPBACK, "--port", str(port), "--workers", "1"],
            cwd=cwd, env=dict(env), start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr,
        )
        try:
            _wait_for(f"{url}/ping", proc, stderr)
            yield url
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the group: mlflow and its uvicorn worker
            proc.wait()


def _wait_for(url: str, proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr.seek(0)
            pytest.fail(f"mlflow models serve exited {proc.returncode}: {stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer on {url} within {SERVE_TIMEOUT_S:.0f} s")


def post_json(url: str, body: Any) -> tuple[int, Any]:
    """POST ``body`` as JSON; the HTTP status and the parsed answer, error statuses included."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


@contextmanager
def tracking_at(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URI set to ``uri`` for the block, then restored.

    ``models:/`` URIs resolve against the process-wide registry whatever URI a
    call is given; ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI.
    """
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setattr(sys, "path", list(sys.path))  # loading a model may add its code folder
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)
