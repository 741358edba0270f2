"""Cloud Storage through gcsfs, the one ``gs://`` door of the project (no torch).

Copy an object down or read it, list and open objects under a prefix, put files or a local
tree up; read an object's generation and write conditionally on it (``ifGenerationMatch``:
the registry's atomic alias moves).

Credentials are Google's defaults (the job's service account, ``gcloud auth
application-default login``); ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` points
everything at an emulator with anonymous access (the tests). Always gcsfs's plain JSON-API
filesystem (``gcsfs.core``): its experimental hierarchical-namespace variant, which
``import gcsfs`` may pick, asks a gRPC endpoint that ignores the emulator.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from lightning_app.errors import UserError


class StorageError(UserError):
    """A Cloud Storage path that cannot be read or written (one line for the user)."""


class PreconditionFailedError(StorageError):
    """A conditional write lost: the object's generation was not the one expected (HTTP 412)."""


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


def generation(uri: str, fs: Any = None) -> int:
    """The live generation of the object ``uri``; ``0`` when there is none (GCS's "absent")."""
    split_uri(uri)
    fs = connect(fs)
    try:
        fs.invalidate_cache(uri)
        return int(fs.info(uri).get("generation") or 0)
    except FileNotFoundError:
        return 0
    except Exception as exc:  # credentials, network: one line
        raise StorageError(f"cannot stat {uri}: {type(exc).__name__}: {exc}") from None


def write_bytes(uri: str, data: bytes, *, if_generation_match: int | None = None, fs: Any = None) -> int:
    """Write ``data`` to ``uri`` in one request and return the new generation.

    With ``if_generation_match`` the write is GCS's conditional write (``ifGenerationMatch``,
    ``0``: only if no object exists): it succeeds only while the object still has that
    generation, else :class:`PreconditionFailedError`. The object is whole or untouched.
    """
    bucket, key = split_uri(uri)
    fs = connect(fs)
    condition = {} if if_generation_match is None else {"ifGenerationMatch": str(if_generation_match)}
    head = (
        '--==0==\nContent-Type: application/json; charset=UTF-8\n\n{"name": ' + json.dumps(key) + "}\n"
        "--==0==\nContent-Type: application/octet-stream\n\n"
    )
    body = head.encode() + data + b"\n--==0==--"
    try:
        answer = fs.call(
            "POST",
            f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
            uploadType="multipart",
            headers={"Content-Type": 'multipart/related; boundary="==0=="'},
            data=body,
            json_out=True,
            **condition,
        )
    except FileExistsError:  # gcsfs's name for HTTP 412
        raise PreconditionFailedError(
            f"{uri} changed since generation {if_generation_match} was read"
        ) from None
    except Exception as exc:
        raise StorageError(f"cannot write {uri}: {type(exc).__name__}: {exc}") from None
    finally:
        fs.invalidate_cache(uri)
    return int(answer.get("generation") or 0)


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
