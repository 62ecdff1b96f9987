"""Download faults on the loopback server: a clear error, the partial file resumed or removed, nothing corrupt.

Already covered in tests/data/test_fetch.py (not repeated): a connection dropped
mid-file and resumed, a server ignoring Range, a complete or oversized part
answered 416, a wrong md5, a cached file with a wrong md5, HTTP 404, an
unreachable host. fetch() never retries within a run: a failed download stops
the stage, and the next run resumes from the kept ``.part``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from signflow.data.fetch import DEFAULT_TIMEOUT, MIRROR_HINT, DownloadError, fetch, md5_file

from http_server import STALL_BEFORE_HEADERS, LoopbackServer

PAYLOAD_SIZE = 300_000
CHUNK = 1 << 14
CUT = 100_000  # body bytes served before a drop or a stall
TIMEOUT = 0.5  # seconds: short, so a stall fails fast; the loopback answers in well under that
STALL_BUDGET = 10.0  # seconds a timed-out fetch may take at most (it must not wait for the stall to end)


@pytest.fixture
def served(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    path = folder / "blob.bin"
    path.write_bytes(os.urandom(PAYLOAD_SIZE))
    return path


@pytest.fixture
def server(served: Path) -> Iterator[LoopbackServer]:
    with LoopbackServer(served.parent) as srv:
        yield srv


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "data" / "raw" / "blob.bin"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_timeout_is_a_named_default() -> None:
    assert fetch.__kwdefaults__["timeout"] == DEFAULT_TIMEOUT > 0


def test_http_500_is_clear_not_retried_and_leaves_nothing(server, served, dest) -> None:
    server.state.status = 500
    url = server.url("blob.bin")
    with pytest.raises(DownloadError) as info:
        fetch(url, dest, _md5(served), chunk_size=CHUNK)
    message = str(info.value)
    assert f"{url} answered HTTP 500" in message and MIRROR_HINT in message
    assert len(server.state.requests) == 1  # not retried: the next run starts again
    assert _left_in(dest.parent) == []


def test_http_500_on_resume_keeps_the_part_for_the_next_run(server, served, dest) -> None:
    url, md5 = server.url("blob.bin"), _md5(served)
    server.state.drop_after = CUT
    with pytest.raises(DownloadError, match="kept; the next run resumes"):
        fetch(url, dest, md5, chunk_size=CHUNK)
    assert _part(dest).read_bytes() == served.read_bytes()[:CUT]
    server.state.drop_after, server.state.status = None, 500
    with pytest.raises(DownloadError, match="HTTP 500"):
        fetch(url, dest, md5, chunk_size=CHUNK)
    assert _part(dest).read_bytes() == served.read_bytes()[:CUT]  # untouched
    server.state.status = None
    fetch(url, dest, md5, chunk_size=CHUNK)
    assert server.state.requests[-1][1] == f"bytes={CUT}-"
    assert md5_file(dest) == md5 and _left_in(dest.parent) == [dest.name]


def test_server_silent_before_headers_times_out(server, served, dest) -> None:
    server.state.stall_after = STALL_BEFORE_HEADERS
    url = server.url("blob.bin")
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(url, dest, _md5(served), chunk_size=CHUNK, timeout=TIMEOUT)
    assert time.monotonic() - started < STALL_BUDGET
    message = str(info.value)
    assert url in message and f"no data for {TIMEOUT:g} s" in message and MIRROR_HINT in message
    assert _left_in(dest.parent) == []


def test_server_stalling_mid_file_times_out_then_resumes(server, served, dest) -> None:
    url, md5, payload = server.url("blob.bin"), _md5(served), served.read_bytes()
    server.state.stall_after = CUT
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(url, dest, md5, chunk_size=CHUNK, timeout=TIMEOUT)
    assert time.monotonic() - started < STALL_BUDGET
    message = str(info.value)
    assert url in message and f"no data for {TIMEOUT:g} s" in message
    assert f"partial file {_part(dest)} kept" in message
    kept = _part(dest).read_bytes()
    assert 0 < len(kept) <= CUT and payload.startswith(kept)  # a prefix: never corrupt
    assert not dest.exists()
    server.state.stall_after = None
    server.state.release.set()  # end the stalled handler
    fetch(url, dest, md5, chunk_size=CHUNK, timeout=TIMEOUT)
    assert server.state.requests[-1][1] == f"bytes={len(kept)}-"
    assert md5_file(dest) == md5 and _left_in(dest.parent) == [dest.name]


@pytest.mark.parametrize("verify", [True, False], ids=["md5", "no_md5"])
def test_file_changed_between_attempts_restarts_from_zero(server, served, dest, verify) -> None:
    """If-Range carries the first response's ETag: the server sends the whole new file, never a splice."""
    url = server.url("blob.bin")
    old_etag = f'"{_md5(served)}"'
    server.state.drop_after = CUT
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(url, dest, _md5(served), chunk_size=CHUNK)
    served.write_bytes(os.urandom(PAYLOAD_SIZE))  # a new release under the same URL, same size
    server.state.drop_after = None
    new_md5 = _md5(served)
    fetch(url, dest, new_md5 if verify else None, chunk_size=CHUNK)
    assert server.state.requests[-1][1] == f"bytes={CUT}-" and server.state.if_ranges[-1] == old_etag
    assert md5_file(dest) == new_md5  # the new file whole, even unverified
    assert _left_in(dest.parent) == [dest.name]  # no part, no validator


def test_file_changed_on_a_server_without_validators_fails_md5_and_removes_the_part(server, served, dest) -> None:
    """No ETag or Last-Modified to send: the splice is caught by the md5, the part deleted, the next run clean."""
    url = server.url("blob.bin")
    server.state.validators = False
    server.state.drop_after = CUT
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(url, dest, _md5(served), chunk_size=CHUNK)
    served.write_bytes(os.urandom(PAYLOAD_SIZE))
    server.state.drop_after = None
    new_md5 = _md5(served)
    with pytest.raises(DownloadError) as info:
        fetch(url, dest, new_md5, chunk_size=CHUNK)
    assert server.state.if_ranges[-1] is None
    message = str(info.value)
    assert f"md5 mismatch for {url}: expected {new_md5}" in message and "the bad file was deleted" in message
    assert _left_in(dest.parent) == []
    fetch(url, dest, new_md5, chunk_size=CHUNK)
    assert server.state.requests[-1][1] is None and md5_file(dest) == new_md5
