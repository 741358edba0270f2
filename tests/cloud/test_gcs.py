"""``lightning_app.cloud.gcs``: the one ``gs://`` door on a fake filesystem.

Conditional writes (``ifGenerationMatch``) run on a real emulator, fake-gcs-server.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lightning_app.cloud import gcs


class FakeFs:
    """The few gcsfs calls gcs.py makes, over a dict of ``bucket/key`` -> bytes."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    @staticmethod
    def _key(path: str) -> str:
        return path.removeprefix("gs://")

    def isfile(self, path: str) -> bool:
        return self._key(path) in self.objects

    def find(self, path: str) -> list[str]:
        prefix = self._key(path).rstrip("/") + "/"
        return [k for k in self.objects if k.startswith(prefix)]

    def open(self, path: str, mode: str = "rb", **kwargs: str) -> io.IOBase:
        data = self.objects[self._key(path)]
        return io.StringIO(data.decode()) if "t" in mode else io.BytesIO(data)

    def put_file(self, local: str, remote: str) -> None:
        self.objects[self._key(remote)] = Path(local).read_bytes()


def test_read_list_open_and_upload(tmp_path: Path) -> None:
    fs = FakeFs({"b/logs/a.jsonl": b"{}\n", "b/logs/sub/b.json": b"[]", "b/other": b"x"})
    assert gcs.read_bytes("gs://b/other", fs) == b"x"
    assert gcs.list_objects("gs://b/logs/", fs) == ["gs://b/logs/a.jsonl", "gs://b/logs/sub/b.json"]
    assert gcs.list_objects("gs://b/other", fs) == ["gs://b/other"]
    with gcs.open_text("gs://b/logs/a.jsonl", fs) as f:
        assert f.read() == "{}\n"
    (tmp_path / "r.md").write_text("report")
    assert gcs.upload_files([tmp_path / "r.md"], "gs://b/drift/", fs) == ["gs://b/drift/r.md"]
    assert fs.objects["b/drift/r.md"] == b"report"


def test_failures_are_one_line_storage_errors(tmp_path: Path) -> None:
    fs = FakeFs({})
    with pytest.raises(gcs.StorageError, match=r"cannot read gs://b/missing: KeyError"):
        gcs.read_bytes("gs://b/missing", fs)
    with pytest.raises(gcs.StorageError, match="not a Cloud Storage URI"):
        gcs.list_objects("/local/path", fs)


def test_without_gcsfs_the_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise ImportError("No module named 'gcsfs'")

    monkeypatch.setattr(gcs, "filesystem", missing)
    with pytest.raises(gcs.StorageError, match="needs gcsfs"):
        gcs.read_bytes("gs://b/x")
    fs = FakeFs({})
    assert gcs.connect(fs) is fs


def test_conditional_writes_on_a_real_emulator(gcs_bucket: str) -> None:
    """``ifGenerationMatch`` against fake-gcs-server: a stale generation never overwrites."""
    uri = f"{gcs_bucket}/aliases/x.json"
    assert gcs.generation(uri) == 0
    first = gcs.write_bytes(uri, b"one", if_generation_match=0)
    assert first > 0 and gcs.generation(uri) == first
    with pytest.raises(gcs.PreconditionFailedError, match="changed since generation 0"):
        gcs.write_bytes(uri, b"two", if_generation_match=0)
    second = gcs.write_bytes(uri, b"two", if_generation_match=first)
    with pytest.raises(gcs.PreconditionFailedError):
        gcs.write_bytes(uri, b"three", if_generation_match=first)
    assert gcs.read_bytes(uri) == b"two" and gcs.generation(uri) == second
    assert gcs.write_bytes(uri, b"four") > second  # unconditional
    with pytest.raises(gcs.StorageError, match="cannot write gs://no-such-bucket/x"):
        gcs.write_bytes("gs://no-such-bucket/x", b"")
