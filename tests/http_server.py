"""A loopback HTTP file server for download tests (127.0.0.1 only, random port).

It serves files under one directory and honours ``Range: bytes=N-`` like a real
mirror, with a strong ETag (the file's md5) and Last-Modified, and ``If-Range``
(a validator that no longer matches gets the whole file, 200). Switches
reproduce the failures the downloader must survive: ``drop_after`` cuts the
connection after that many body bytes (a flaky network), ``honour_range=False``
answers every request 200 from byte zero (servers that ignore Range),
``status`` answers every request with that error code, ``stall_after`` goes
silent (connection open, nothing sent) after that many body bytes, or before
the status line with ``STALL_BEFORE_HEADERS``, and ``validators=False`` sends no
ETag or Last-Modified. Every request's path and Range header are recorded so
tests can assert what the client actually asked for.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
ANY_FREE_PORT = 0
CHUNK_SIZE = 1 << 16
POLL_INTERVAL = 0.05  # seconds; how fast shutdown() is noticed, keeps teardown quick
STALL_BEFORE_HEADERS = -1  # stall_after value: accept the request, then send nothing at all
STALL_LIMIT = 30.0  # seconds a stalled handler waits at most (the server's exit releases it at once)
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class ServerState:
    """Switches a test flips between requests, and the requests seen so far."""

    root: Path
    honour_range: bool = True
    drop_after: int | None = None  # body bytes sent before the connection is cut
    status: int | None = None  # answer every request with this HTTP error (e.g. 500)
    stall_after: int | None = None  # body bytes sent before going silent; STALL_BEFORE_HEADERS: nothing
    validators: bool = True  # send ETag and Last-Modified (and honour If-Range)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    if_ranges: list[str | None] = field(default_factory=list)  # each request's If-Range header
    release: threading.Event = field(default_factory=threading.Event)  # ends every stall

    def stall(self) -> None:
        self.release.wait(STALL_LIMIT)


class _Handler(BaseHTTPRequestHandler):
    server: _StateServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state = self.server.state
        state.requests.append((self.path, self.headers.get("Range")))
        state.if_ranges.append(self.headers.get("If-Range"))
        if state.stall_after == STALL_BEFORE_HEADERS:
            state.stall()
            return
        if state.status is not None:
            self.send_error(state.status)
            return
        path = (state.root / self.path.lstrip("/")).resolve()
        if not path.is_file() or not path.is_relative_to(state.root.resolve()):
            self.send_error(404)
            return
        size = path.stat().st_size
        etag = f'"{hashlib.md5(path.read_bytes()).hexdigest()}"'
        modified = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
        if_range = self.headers.get("If-Range")
        current = not state.validators or if_range is None or if_range in (etag, modified)
        ranged = state.honour_range and current and _RANGE.match(self.headers.get("Range") or "") is not None
        start, end = self._range(size) if ranged else (0, size - 1)
        if start is None:
            return
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if state.validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes" if state.honour_range else "none")
        self.end_headers()
        self._send_body(path, start, end - start + 1, state.drop_after, state)

    def _range(self, size: int) -> tuple[int | None, int]:
        """Parse the Range header; answers 416 itself and returns (None, 0) if unsatisfiable."""
        match = _RANGE.match(self.headers["Range"])
        assert match is not None  # do_GET only calls this for a valid Range
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None, 0
        return start, end

    def _send_body(self, path: Path, start: int, length: int, drop_after: int | None, state: ServerState) -> None:
        stall = state.stall_after is not None and state.stall_after < length
        limit = state.stall_after if stall else length if drop_after is None else min(length, drop_after)
        with open(path, "rb") as fh:
            fh.seek(start)
            remaining = limit
            while remaining > 0:
                chunk = fh.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        if stall:
            self.wfile.flush()
            state.stall()
            self.close_connection = True
        elif limit < length:
            self.close_connection = True  # the client sees EOF before Content-Length

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        log.debug("%s " + format, self.address_string(), *args)


class _StateServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ServerState) -> None:
        super().__init__((LOOPBACK, ANY_FREE_PORT), _Handler)
        self.state = state


class LoopbackServer:
    """Context manager: serve ``root`` on 127.0.0.1 in a background thread."""

    def __init__(self, root: Path) -> None:
        self.state = ServerState(root=Path(root))
        self._server = _StateServer(self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, daemon=True
        )

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.state.release.set()  # a stalled handler must end before the server can close
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def free_port() -> int:
    """A TCP port free on the loopback interface now (for servers a test starts in another process)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, ANY_FREE_PORT))
        return sock.getsockname()[1]
