"""Test helpers for DVC: a real ``gcp-storage-emulator`` on loopback and temporary repo copies.

The emulator speaks the real GCS JSON API on 127.0.0.1; gcsfs (inside DVC) talks to it
through the remote's ``endpointurl``. Nothing of Google is mocked here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from lightning_app.data import remote as rm
from tests.conftest import REPO, free_port, stop_server

EMULATOR = Path(sys.executable).parent / "gcp-storage-emulator"


class GcsEmulator:
    """A ``gcp-storage-emulator`` process; use as a context manager (stopped on exit)."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [str(EMULATOR), "start", "--host", "127.0.0.1", "--port", str(self.port), "--in-memory", "-q"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> GcsEmulator:
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/storage/v1/b?project=test")
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("gcp-storage-emulator did not start") from None
                time.sleep(0.2)

    def __exit__(self, *_: object) -> None:
        stop_server(self.proc, self._log)

    def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.endpoint + path, data=body, method=method)
        if body is not None:
            request.add_header(
                "Content-Type",
                "application/json" if path.startswith("/storage") else "application/octet-stream",
            )
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())

    def create_bucket(self, name: str) -> str:
        """Create a bucket through the GCS API; return its name."""
        self._call("POST", "/storage/v1/b?project=test", json.dumps({"name": name}).encode())
        return name

    def objects(self, bucket: str) -> list[str]:
        """Names of every object in ``bucket``."""
        listing = json.loads(self._call("GET", f"/storage/v1/b/{bucket}/o"))
        return sorted(item["name"] for item in listing.get("items", []))

    def overwrite(self, bucket: str, name: str, data: bytes) -> None:
        """Replace an object's bytes (a media upload, as any GCS client would do)."""
        self._call(
            "POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(name, safe='')}", data
        )

    def read(self, bucket: str, name: str) -> bytes:
        """An object's bytes."""
        return self._call("GET", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media")


def make_repo(dest: Path, data: Path | None = None, *, data_dvc: bool = False) -> Path:
    """A fresh 'clone': git repo with the project's committed DVC files (never the real .dvc).

    ``data`` is copied to ``dest/data/br35h``; ``data_dvc`` also copies the committed
    ``data.dvc``.
    """
    dest.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, timeout=30)
    (dest / ".dvc").mkdir()
    for name in (".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore", "Makefile"):
        shutil.copy2(REPO / name, dest / name)
    if data_dvc:
        shutil.copy2(REPO / "data.dvc", dest / "data.dvc")
    if data is not None:
        shutil.copytree(data, dest / "data" / "br35h")
    return dest


def use_endpoint(repo: Path, endpoint: str, bucket: str) -> None:
    """Point the temp repo's remote at an emulator bucket, in ``.dvc/config.local`` only."""
    (repo / ".dvc" / "config.local").write_text(
        f"['remote \"{rm.REMOTE_NAME}\"']\n"
        f"    url = gs://{bucket}\n"
        f"    endpointurl = {endpoint}\n"
        "    allow_anonymous_login = true\n"
    )


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real DVC CLI in ``repo`` (bounded by a timeout)."""
    return rm.run_dvc(list(args), repo, timeout=300)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def wipe(repo: Path) -> None:
    """Delete the workspace data and the DVC cache (as on a fresh machine)."""
    shutil.rmtree(repo / "data", ignore_errors=True)
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
