"""Fetch one file from an http(s) URL, a ``file://`` URL or a local path, md5-checked.

Datasets are large and networks flaky, so HTTP downloads stream into a ``.part``
file beside the destination and resume from it with a ``Range`` request; the
final rename happens only after the md5 matches, so ``dest`` is either absent or
verified. A resume also sends ``If-Range`` with the validator (strong ETag, else
Last-Modified) of the response the part began with, kept in ``<dest>.part.validator``:
if the server's file changed in between, the server answers with the whole new
file and the download restarts from zero instead of splicing two versions
(which an empty md5, allowed for own mirrors, could not catch). Nothing is
retried within a run: a failed download stops the stage, and the next run resumes.
Local sources exist for mirrors and air-gapped sites, where the
dataset URL (``data.gtsrb.url``) points at a copy on disk.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from signflow.files import atomic_path, file_digest

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1 << 20  # 1 MiB: few syscalls, small memory
DEFAULT_TIMEOUT = 60.0  # seconds without data (connecting, headers or body) before the download gives up
PART_SUFFIX = ".part"
VALIDATOR_SUFFIX = ".validator"  # beside the part: the ETag / Last-Modified the part's bytes came with
WEAK_ETAG_PREFIX = "W/"  # weak ETags may not be used in If-Range (RFC 9110 13.1.5)
HTTP_SCHEMES = ("http", "https")
FILE_SCHEME = "file"
USER_AGENT = "signflow-downloader"  # some servers refuse urllib's default agent
HTTP_OK = 200
HTTP_PARTIAL = 206
HTTP_RANGE_NOT_SATISFIABLE = 416
# "bytes START-END/TOTAL" or "bytes */TOTAL" (the latter answers a 416)
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
# A one-letter "scheme" is a Windows drive ("C:\\data\\x.zip"), i.e. a local path.
_DRIVE_SCHEME_LEN = 1
MIRROR_HINT = (
    "If this machine cannot reach it, download the file elsewhere and set "
    "data.gtsrb.url in params.yaml to a local path or a file:// URL of that copy."
)


class DownloadError(RuntimeError):
    """A source could not be fetched or did not match its expected md5."""


def md5_file(path: Path) -> str:
    """Hex md5 of a file, the checksum the official archives are published with."""
    return file_digest(path, "md5")


def fetch(
    source: str,
    dest: Path,
    md5: str | None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Make ``dest`` a verified copy of ``source`` and return ``dest``.

    ``md5=None`` skips verification (and therefore always re-fetches, since a
    cached file cannot be proven current). A source that *is* ``dest`` is only
    verified, never deleted, because it is the user's own copy.
    """
    dest = Path(dest)
    local = local_source(source)
    if local is not None and local.exists() and dest.exists() and local.samefile(dest):
        _verify(dest, md5, source, delete_on_mismatch=False)
        log.info("%s is the source itself; verified in place", dest)
        return dest
    if _cached(dest, md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if local is not None:
        _copy_local(local, source, dest, md5, chunk_size)
    else:
        _fetch_http(source, dest, md5, chunk_size, timeout)
    return dest


def local_source(source: str) -> Path | None:
    """The filesystem path of a ``file://`` URL or plain path; None for http(s)."""
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in HTTP_SCHEMES:
        return None
    if scheme == FILE_SCHEME:
        # file://localhost/x and file:///x both mean /x; other hosts are not local.
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"{source}: file:// URLs must be local (file:///path), got host {parsed.netloc!r}")
        return Path(url2pathname(parsed.path))
    if scheme == "" or len(scheme) == _DRIVE_SCHEME_LEN:
        return Path(source).expanduser()
    raise DownloadError(f"{source}: unsupported scheme {scheme!r}; use http(s)://, file:// or a local path")


def _cached(dest: Path, md5: str | None) -> bool:
    """True if ``dest`` already holds the expected file; removes it if it is bad."""
    if not dest.exists():
        return False
    if md5 is None:
        log.info("%s exists but no md5 is configured to verify it; fetching again", dest)
        return False
    actual = md5_file(dest)
    if actual == md5.lower():
        log.info("%s already present with md5 %s; skipping download", dest, actual)
        return True
    log.warning("%s has md5 %s, expected %s; deleting and fetching again", dest, actual, md5)
    dest.unlink()
    return False


def _verify(path: Path, md5: str | None, source: str, *, delete_on_mismatch: bool) -> None:
    if md5 is None:
        log.warning("no md5 configured for %s; %s is not verified", source, path)
        return
    actual = md5_file(path)
    if actual == md5.lower():
        return
    if delete_on_mismatch:
        path.unlink(missing_ok=True)
    raise DownloadError(
        f"md5 mismatch for {source}: expected {md5.lower()}, got {actual}"
        + (" (the bad file was deleted)" if delete_on_mismatch else f" ({path} left untouched)")
    )


def _copy_local(local: Path, source: str, dest: Path, md5: str | None, chunk_size: int) -> None:
    """Copy a mirror file to ``dest``; the atomic temp is dropped if md5 fails."""
    if not local.is_file():
        raise DownloadError(f"{source}: local source {local} does not exist or is not a file")
    total = local.stat().st_size
    with atomic_path(dest) as tmp:
        with open(local, "rb") as src, open(tmp, "wb") as dst:
            _stream(src, dst, chunk_size, _progress(dest.name, total, 0))
        _verify(tmp, md5, source, delete_on_mismatch=True)
    log.info("copied %s to %s (%d bytes)", local, dest, total)


def _fetch_http(url: str, dest: Path, md5: str | None, chunk_size: int, timeout: float) -> None:
    # Not atomic_path: the partial file must survive a crash to be resumed.
    part = dest.with_suffix(dest.suffix + PART_SUFFIX)
    complete = _download_to_part(url, part, chunk_size, timeout)
    if not complete:
        log.info("server reports %s already complete; verifying", part)
    try:
        _verify(part, md5, url, delete_on_mismatch=True)
    finally:
        if not part.exists():
            _validator_path(part).unlink(missing_ok=True)
    os.replace(part, dest)
    _validator_path(part).unlink(missing_ok=True)
    log.info("downloaded %s to %s", url, dest)


def _validator_path(part: Path) -> Path:
    return part.with_name(part.name + VALIDATOR_SUFFIX)


def _read_validator(part: Path) -> str | None:
    """The validator the part's first bytes came with, or None (no part, or the server sent none)."""
    try:
        return _validator_path(part).read_text().strip() or None
    except OSError:
        return None


def _write_validator(part: Path, response: http.client.HTTPResponse) -> None:
    """Remember the response's validator for the next resume's If-Range (or forget a stale one)."""
    etag = response.headers.get("ETag")
    validator = etag if etag and not etag.startswith(WEAK_ETAG_PREFIX) else response.headers.get("Last-Modified")
    if validator:
        _validator_path(part).write_text(validator + "\n")
    else:
        _validator_path(part).unlink(missing_ok=True)


def _discard_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator_path(part).unlink(missing_ok=True)


def _download_to_part(url: str, part: Path, chunk_size: int, timeout: float) -> bool:
    """Stream ``url`` into ``part``, resuming; False if the part was already whole."""
    offset = part.stat().st_size if part.exists() else 0
    validator = _read_validator(part) if offset else None
    try:
        response = _open(url, offset, timeout, validator)
    except HTTPError as err:
        if err.code != HTTP_RANGE_NOT_SATISFIABLE or offset == 0:
            raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}. {MIRROR_HINT}") from err
        if _range_total(err.headers.get("Content-Range")) == offset:
            return False  # the previous run got every byte but stopped before renaming
        log.warning("%s does not match the server's file (HTTP 416); restarting from zero", part)
        _discard_part(part)
        return _download_to_part(url, part, chunk_size, timeout)
    with response:
        start, total = _resume_point(response, offset, url, validator)
        if not start:
            _write_validator(part, response)
        mode = "ab" if start else "wb"
        try:
            with open(part, mode) as dst:
                _stream(response, dst, chunk_size, _progress(part.name, total, start))
        except TimeoutError as err:
            raise _interrupted(url, part, _silent(timeout)) from err
        except (OSError, http.client.HTTPException) as err:
            raise _interrupted(url, part, err) from err
    received = part.stat().st_size
    if total is not None and received != total:
        if received > total:
            _discard_part(part)
        raise _interrupted(url, part, f"got {received} of {total} bytes")
    return True


def _silent(timeout: float) -> str:
    return f"timed out: no data for {timeout:g} s"


def _open(url: str, offset: int, timeout: float, validator: str | None = None) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator  # changed since the part began: the server sends it whole
        log.info("resuming %s from byte %d", url, offset)
    try:
        return urlopen(Request(url, headers=headers), timeout=timeout)  # noqa: S310 (scheme checked)
    except HTTPError:
        raise
    except (URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError):
            raise DownloadError(f"{url} did not answer ({_silent(timeout)}). {MIRROR_HINT}") from err
        raise DownloadError(f"{url} could not be reached ({reason}). {MIRROR_HINT}") from err


def _resume_point(
    response: http.client.HTTPResponse, offset: int, url: str, validator: str | None = None
) -> tuple[int, int | None]:
    """Where this response's body starts in the file, and the file's total size."""
    length = response.headers.get("Content-Length")
    if response.status == HTTP_PARTIAL:
        content_range = response.headers.get("Content-Range")
        match = _CONTENT_RANGE.match(content_range or "")
        if match and match.group(1) is not None and int(match.group(1)) == offset:
            return offset, _range_total(content_range)
        raise DownloadError(f"{url} answered a resume from byte {offset} with Content-Range {content_range!r}")
    if response.status != HTTP_OK:
        raise DownloadError(f"{url} answered HTTP {response.status}. {MIRROR_HINT}")
    if offset and validator:
        log.warning("%s changed on the server since the partial download (or ignores Range); "
                    "restarting from zero", url)
    elif offset:
        log.warning("%s ignored the Range request; restarting from zero", url)
    return 0, int(length) if length is not None else None


def _range_total(content_range: str | None) -> int | None:
    match = _CONTENT_RANGE.match(content_range or "")
    if match is None or match.group(2) == "*":
        return None
    return int(match.group(2))


def _interrupted(url: str, part: Path, reason: object) -> DownloadError:
    kept = f"partial file {part} kept; the next run resumes from it" if part.exists() else "nothing kept"
    return DownloadError(f"download of {url} was interrupted ({reason}); {kept}. {MIRROR_HINT}")


def _progress(name: str, total: int | None, initial: int) -> tqdm:
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)


def _stream(src: BinaryIO, dst: BinaryIO, chunk_size: int, bar: tqdm) -> None:
    with bar:
        for chunk in iter(lambda: src.read(chunk_size), b""):
            dst.write(chunk)
            bar.update(len(chunk))
