"""fetch(): http with resume, local mirrors, md5 checks, and safe zip extraction."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from signflow.data.archive import UnsafeArchiveError, safe_extract_zip
from signflow.data.fetch import DownloadError, fetch, md5_file

from http_server import LoopbackServer
from zips import make_zip, symlink_entry

PAYLOAD_SIZE = 300_000  # a few chunks of CHUNK, small enough to be instant
CHUNK = 1 << 14
BAD_MD5 = "0" * 32
CONNECT_TIMEOUT = 5.0  # seconds; a refused loopback connection fails at once anyway


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    """A served file with non-repeating bytes, so a wrong offset changes the md5."""
    served = tmp_path / "served"
    served.mkdir()
    path = served / "blob.bin"
    path.write_bytes(os.urandom(PAYLOAD_SIZE))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def server(payload: tuple[Path, str]) -> Iterator[LoopbackServer]:
    with LoopbackServer(payload[0].parent) as srv:
        yield srv


def _part(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def test_md5_file_matches_hashlib(payload: tuple[Path, str]) -> None:
    assert md5_file(payload[0]) == payload[1]


def test_http_fetch_then_cached(server: LoopbackServer, payload: tuple[Path, str], tmp_path: Path) -> None:
    dest = tmp_path / "out" / "blob.bin"
    assert fetch(server.url("blob.bin"), dest, payload[1], chunk_size=CHUNK) == dest
    assert md5_file(dest) == payload[1] and not _part(dest).exists()
    fetch(server.url("blob.bin"), dest, payload[1])
    assert len(server.state.requests) == 1  # the second call trusted the verified file


def test_resume_after_dropped_connection(server: LoopbackServer, payload: tuple[Path, str], tmp_path: Path) -> None:
    dest = tmp_path / "blob.bin"
    half = PAYLOAD_SIZE // 2
    server.state.drop_after = half
    with pytest.raises(DownloadError, match="interrupted.*resumes"):
        fetch(server.url("blob.bin"), dest, payload[1], chunk_size=CHUNK)
    assert _part(dest).stat().st_size == half and not dest.exists()
    server.state.drop_after = None
    fetch(server.url("blob.bin"), dest, payload[1], chunk_size=CHUNK)
    assert server.state.requests[-1][1] == f"bytes={half}-"
    assert md5_file(dest) == payload[1] and not _part(dest).exists()


def test_server_ignoring_range_restarts_from_zero(
    server: LoopbackServer, payload: tuple[Path, str], tmp_path: Path
) -> None:
    dest = tmp_path / "blob.bin"
    _part(dest).write_bytes(b"stale bytes that must not be kept")
    server.state.honour_range = False
    fetch(server.url("blob.bin"), dest, payload[1], chunk_size=CHUNK)
    assert server.state.requests[0][1] is not None  # it did ask to resume
    assert md5_file(dest) == payload[1]


def test_complete_part_answered_416_is_verified(
    server: LoopbackServer, payload: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "blob.bin"
    _part(dest).write_bytes(payload[0].read_bytes())
    with caplog.at_level(logging.INFO, logger="signflow.data.fetch"):
        fetch(server.url("blob.bin"), dest, payload[1])
    assert "already complete" in caplog.text and len(server.state.requests) == 1
    assert md5_file(dest) == payload[1] and not _part(dest).exists()


def test_oversized_part_answered_416_restarts(
    server: LoopbackServer, payload: tuple[Path, str], tmp_path: Path
) -> None:
    dest = tmp_path / "blob.bin"
    _part(dest).write_bytes(b"x" * (PAYLOAD_SIZE + 1))
    fetch(server.url("blob.bin"), dest, payload[1])
    assert [rng for _, rng in server.state.requests] == [f"bytes={PAYLOAD_SIZE + 1}-", None]
    assert md5_file(dest) == payload[1]


def test_wrong_md5_leaves_nothing(server: LoopbackServer, payload: tuple[Path, str], tmp_path: Path) -> None:
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError) as info:
        fetch(server.url("blob.bin"), dest, BAD_MD5)
    message = str(info.value)
    assert BAD_MD5 in message and payload[1] in message and server.url("blob.bin") in message
    assert not dest.exists() and not _part(dest).exists()


def test_cached_file_with_wrong_md5_is_refetched(
    server: LoopbackServer, payload: tuple[Path, str], tmp_path: Path
) -> None:
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"corrupt")
    fetch(server.url("blob.bin"), dest, payload[1])
    assert md5_file(dest) == payload[1]


def test_http_404_names_the_url(server: LoopbackServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        fetch(server.url("nope.zip"), tmp_path / "nope.zip", None)


def test_unreachable_host_suggests_mirror(tmp_path: Path) -> None:
    with socket.socket() as sock:  # find a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.zip"
    with pytest.raises(DownloadError, match="could not be reached") as info:
        fetch(url, tmp_path / "x.zip", None, timeout=CONNECT_TIMEOUT)
    assert url in str(info.value) and "file://" in str(info.value) and "data.gtsrb.url" in str(info.value)


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "plain-path"])
def test_local_sources_are_copied_and_verified(payload: tuple[Path, str], tmp_path: Path, as_url: bool) -> None:
    source = payload[0].as_uri() if as_url else str(payload[0])
    dest = tmp_path / "copy" / "blob.bin"
    fetch(source, dest, payload[1])
    assert md5_file(dest) == payload[1]
    with pytest.raises(DownloadError, match=BAD_MD5):
        fetch(source, tmp_path / "other.bin", BAD_MD5)
    assert not (tmp_path / "other.bin").exists()
    assert payload[0].exists()  # the mirror itself is never touched


def test_source_that_is_dest_is_verified_in_place(payload: tuple[Path, str]) -> None:
    assert fetch(str(payload[0]), payload[0], payload[1]) == payload[0]
    with pytest.raises(DownloadError, match="mismatch"):
        fetch(str(payload[0]), payload[0], BAD_MD5)
    assert payload[0].exists()


def test_missing_local_source(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="does not exist"):
        fetch(str(tmp_path / "absent.zip"), tmp_path / "dest.zip", None)


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="unsupported scheme"):
        fetch("ftp://example.invalid/x.zip", tmp_path / "x.zip", None)


# --- archives -------------------------------------------------------------------


def test_safe_extract_writes_files_and_replaces_dest(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "ok.zip", {"a/b.txt": b"b", "c.txt": b"c"})
    dest = tmp_path / "dest"
    (dest / "old").mkdir(parents=True)
    files = safe_extract_zip(archive, dest)
    assert files == [dest / "a/b.txt", dest / "c.txt"]
    assert (dest / "a/b.txt").read_bytes() == b"b" and not (dest / "old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "ok.zip"]  # no temp left beside


EVIL_ABSOLUTE = f"/tmp/signflow-evil-{os.getpid()}"


@pytest.mark.parametrize(
    ("members", "limits", "reason"),
    [
        ({"ok.txt": b"x", "../evil.txt": b"x"}, {}, r"'\.\./evil\.txt'.*'\.\.'"),
        ({"a/../../evil.txt": b"x"}, {}, r"'\.\.'"),
        ({EVIL_ABSOLUTE: b"x"}, {}, "absolute"),
        ({"..\\evil.txt": b"x"}, {}, "backslash"),
        ({"C:/evil.txt": b"x"}, {}, "drive letter"),
        ({symlink_entry("link"): b"/etc/passwd"}, {}, "symbolic link"),
        ({f"f{i}.txt": b"x" for i in range(4)}, {"max_members": 3}, "4 members"),
        ({"big.bin": b"\0" * 2048}, {"max_total_bytes": 1024}, "zip bomb"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "backslash", "drive", "symlink", "members", "bytes"],
)
def test_unsafe_archives_are_refused_whole(
    tmp_path: Path, members: dict[str | zipfile.ZipInfo, bytes], limits: dict[str, int], reason: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = make_zip(tmp_path / "evil.zip", members)
    dest = work / "dest"
    with pytest.raises(UnsafeArchiveError, match=reason):
        safe_extract_zip(archive, dest, **limits)
    assert list(work.iterdir()) == []  # neither dest nor a temp dir nor an escaped file
    assert not (tmp_path / "evil.txt").exists() and not Path(EVIL_ABSOLUTE).exists()


@pytest.mark.parametrize("content", [b"this is not a zip", b""], ids=["text", "empty"])
def test_non_zip_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "fake.zip"
    archive.write_bytes(content)
    with pytest.raises(UnsafeArchiveError, match="not a readable zip"):
        safe_extract_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_corrupt_member_data_is_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bad.zip", {"a.txt": b"hello world" * 100})
    data = bytearray(archive.read_bytes())
    offset = data.index(b"a.txt") + len("a.txt")  # first bytes of the member's data
    data[offset : offset + 4] = b"XXXX"
    archive.write_bytes(bytes(data))
    with pytest.raises(UnsafeArchiveError, match="corrupt"):
        safe_extract_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
