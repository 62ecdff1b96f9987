"""Configure the project's default DVC remote: where ``dvc push`` sends data and models, ``dvc pull`` fetches them.

Why: ``data/`` and ``models/`` live in DVC's cache, never in git, so a teammate
or CI that clones the repository gets them (and a no-op ``dvc repro``) only
from a shared remote. The remote's URL and an S3 endpoint (MinIO) are project
config written to ``.dvc/config``, which is committed. Credentials never are:
they come from the standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
environment variables or from ``dvc remote modify --local <name>
access_key_id ...``, which writes the git-ignored ``.dvc/config.local``.
Without a URL the remote is a folder beside the repository: enough for one
machine, and the same commands later work unchanged against S3.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from signflow import processes
from signflow.cli import EXIT_OK
from signflow.commands.args import fail

log = logging.getLogger(__name__)

DEFAULT_NAME = "storage"
# The default remote folder: `<root>/../<root name><suffix>`, outside the repository
# so `git add -A` and `dvc` never see it as part of the project.
LOCAL_STORAGE_SUFFIX = "-dvc-storage"
S3_SCHEME = "s3://"
# Any "<scheme>://" (s3, gs, azure, ssh, http...) is a URL for DVC; anything else a local path.
URL_SEPARATOR = "://"
ENDPOINT_OPTION = "endpointurl"
DVC_SECONDS = 120.0  # `dvc remote add/modify` only edit .dvc/config: seconds at most
CREDENTIALS_HINT = (
    "credentials stay out of git: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "or run `dvc remote modify --local {name} access_key_id ...` (and secret_access_key)"
)

# The one-line help of `signflow remote` (the CLI's registry can use it too).
DESCRIPTION = "configure the default DVC remote that dvc push/pull use for data and models"


class RemoteError(RuntimeError):
    """A remote cannot be configured; the message is one line saying what to do."""


def default_storage(root: Path) -> Path:
    """The folder used when no URL is given: ``<root>/../<root name>-dvc-storage``, absolute."""
    root = root.resolve()
    return root.parent / f"{root.name}{LOCAL_STORAGE_SUFFIX}"


def resolve_url(root: Path, url: str | None) -> str:
    """The URL DVC gets: ``url`` as given, a local path made absolute, or the default folder (created)."""
    if url and URL_SEPARATOR in url:
        return url
    folder = Path(url).expanduser().resolve() if url else default_storage(root)
    folder.mkdir(parents=True, exist_ok=True)
    if not url:
        log.info("no remote URL given: using the folder %s", folder)
    return str(folder)


def run_dvc(root: Path, *args: str) -> str:
    """``dvc <args>`` run in ``root`` by the one runner; its stdout, or CommandError with its stderr."""
    return processes.run(["dvc", *args], root, timeout=DVC_SECONDS).stdout


def configure_remote(root: Path, url: str | None, endpoint_url: str | None = None, name: str = DEFAULT_NAME) -> str:
    """Make ``name`` the default DVC remote of the project at ``root``; return the URL used.

    ``url`` None means the folder ``default_storage(root)``. ``endpoint_url``
    (S3-compatible servers such as MinIO) is only valid with an ``s3://`` URL.
    Re-running replaces the remote's whole section, so a stale endpoint never lingers.
    """
    if not (root / ".dvc").is_dir():
        raise RemoteError(f"{root} is not a DVC project (no .dvc/): pass --root <project> or run `dvc init` there")
    if endpoint_url and not (url or "").startswith(S3_SCHEME):
        raise RemoteError(f"--endpoint-url needs an {S3_SCHEME}bucket/path URL, got {url!r}")
    resolved = resolve_url(root, url)
    run_dvc(root, "remote", "add", "--default", "--force", name, resolved)
    if endpoint_url:
        run_dvc(root, "remote", "modify", name, ENDPOINT_OPTION, endpoint_url)
    log.info("default DVC remote %r -> %s%s (in .dvc/config: commit it)", name, resolved,
             f" via {endpoint_url}" if endpoint_url else "")
    if resolved.startswith(S3_SCHEME):
        log.info(CREDENTIALS_HINT.format(name=name))
    return resolved


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `signflow remote` (the CLI registers the subcommand)."""
    parser.add_argument("url", nargs="?", default=None,
                        help="s3://bucket/path, another DVC URL or a folder, relative to the current directory "
                             f"(default: a folder beside the repository, <root>/../<root name>{LOCAL_STORAGE_SUFFIX})")
    parser.add_argument("--endpoint-url", default=None,
                        help="S3-compatible endpoint, e.g. http://minio.example:9000 (s3:// URLs only)")
    parser.add_argument("--name", default=DEFAULT_NAME, help="remote name (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="project root holding .dvc/ (default: the current directory)")


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow remote`: configure the remote, print it; 2 with a one-line error on failure."""
    try:
        url = configure_remote(args.root, args.url, args.endpoint_url, args.name)
    except (RemoteError, processes.CommandError) as err:
        return fail(str(err))
    print(f"{args.name}: {url}" + (f" (endpoint {args.endpoint_url})" if args.endpoint_url else ""))
    return EXIT_OK
