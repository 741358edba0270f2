"""Cloud Storage through gcsfs, the one ``gs://`` door of the project (no torch).

Copy an object down or read it, list and open objects under a prefix, put files or a local
tree up.

Credentials are Google's defaults (the job's service account, ``gcloud auth
application-default login``); ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` points
everything at an emulator with anonymous access (the tests). Always gcsfs's plain JSON-API
filesystem (``gcsfs.core``): its experimental hierarchical-namespace variant, which
``import gcsfs`` may pick, asks a gRPC endpoint that ignores the emulator.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from lightning_app.errors import UserError


class StorageError(UserError):
    """A Cloud Storage path that cannot be read or written (one line for the user)."""


def split_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``; a one-line error for anything else."""
    if not uri.startswith("gs://") or not uri[5:].split("/", 1)[0]:
        raise StorageError(f"not a Cloud Storage URI (gs://bucket/path): {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key.strip("/")


def filesystem() -> Any:
    """A gcsfs filesystem: the emulator (anonymous) when ``STORAGE_EMULATOR_HOST`` is set."""
    from gcsfs.core import GCSFileSystem

    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if emulator:
        return GCSFileSystem(endpoint_url=emulator, token="anon", skip_instance_cache=True)
    return GCSFileSystem(skip_instance_cache=True)


def connect(fs: Any = None) -> Any:
    """``fs`` if given, else :func:`filesystem`; a one-line error where gcsfs is not installed."""
    if fs is not None:
        return fs
    try:
        return filesystem()
    except ImportError:
        raise StorageError("reading gs:// needs gcsfs (the train dependency group)") from None


def read_bytes(uri: str, fs: Any = None) -> bytes:
    """The whole content of the object ``uri``."""
    split_uri(uri)
    try:
        with connect(fs).open(uri, "rb") as f:
            return bytes(f.read())
    except StorageError:
        raise
    except Exception as exc:  # credentials, network, missing object: one line
        raise StorageError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from None


def list_objects(uri: str, fs: Any = None) -> list[str]:
    """``uri`` itself if it is an object, else every object under that prefix (``gs://`` URIs)."""
    split_uri(uri)
    fs = connect(fs)
    try:
        keys = [uri[5:]] if fs.isfile(uri) else sorted(fs.find(uri))
    except Exception as exc:  # credentials, network, missing bucket: one line
        raise StorageError(f"cannot list {uri}: {type(exc).__name__}: {exc}") from None
    return [f"gs://{key}" for key in keys]


@contextmanager
def open_text(uri: str, fs: Any = None) -> Iterator[IO[str]]:
    """The object ``uri`` as UTF-8 text (undecodable bytes replaced)."""
    split_uri(uri)
    with connect(fs).open(uri[5:], "rt", encoding="utf-8", errors="replace") as f:
        yield f


def upload_files(paths: Iterable[Path], target: str, fs: Any = None) -> list[str]:
    """Put each file of ``paths`` at ``target/<its name>`` (``target`` a ``gs://`` prefix)."""
    split_uri(target)
    fs = connect(fs)
    uploaded: list[str] = []
    for path in paths:
        remote = f"{target.rstrip('/')}/{path.name}"
        try:
            fs.put_file(str(path), remote)
        except Exception as exc:
            raise StorageError(f"cannot write {remote}: {type(exc).__name__}: {exc}") from None
        uploaded.append(remote)
    return uploaded


def fetch(uri: str, dest: Path, fs: Any = None) -> Path:
    """Copy ``uri`` (``gs://`` or a local path) to ``dest``, atomically (no half-written file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-", suffix=".partial")
    os.close(fd)
    try:
        if uri.startswith("gs://"):
            split_uri(uri)
            try:
                (fs or filesystem()).get_file(uri.removeprefix("gs://"), tmp)
            except FileNotFoundError:
                raise StorageError(f"no such object: {uri}") from None
            except Exception as exc:  # auth, network, emulator: one line for the user
                raise StorageError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from None
        else:
            source = Path(uri)
            if not source.is_file():
                raise StorageError(f"no such file: {uri}")
            Path(tmp).write_bytes(source.read_bytes())
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def upload_tree(local_root: Path, fs: Any = None) -> list[str]:
    """Upload every file under ``local_root/<bucket>/<path>`` to ``gs://<bucket>/<path>``."""
    fs = fs or filesystem()
    uploaded: list[str] = []
    for path in sorted(p for p in local_root.rglob("*") if p.is_file()):
        remote = path.relative_to(local_root).as_posix()
        try:
            fs.put_file(str(path), remote)
        except Exception as exc:
            raise StorageError(f"cannot write gs://{remote}: {type(exc).__name__}: {exc}") from None
        uploaded.append(f"gs://{remote}")
    return uploaded
