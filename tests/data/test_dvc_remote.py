"""DVC remote configuration: ``make data-remote``, and when a remote counts as usable.

Real DVC CLI on temporary repo copies; Google itself cannot be reached here, so where a
test needs "storage.googleapis.com answers" a local socket stands in for it (said below).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from dvc_helpers import make_repo

from lightning_app.data import remote as rm
from lightning_app.data.versioning import main
from tests.conftest import free_port


def test_data_remote_rewrites_only_the_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "clone")
    before = (repo / ".dvc" / "config").read_text()
    assert main(["--repo", str(repo), "set-remote", "gs://my-mri-data/v1"]) == 0
    after = (repo / ".dvc" / "config").read_text()
    assert "gs://my-mri-data/v1" in capsys.readouterr().out
    assert after == before.replace("url = gs://brain-mri-data", "url = gs://my-mri-data/v1")
    remote = rm.read_remote(repo)
    assert remote is not None
    assert (remote.url, remote.options.get("verify")) == ("gs://my-mri-data/v1", "true")
    for bad in ("My Bucket!", "a", "x/../../etc"):
        assert main(["--repo", str(repo), "set-remote", bad]) == 2
        assert "not a valid GCS bucket name" in capsys.readouterr().err
    assert (repo / ".dvc" / "config").read_text() == after


def test_data_remote_adds_a_remote_when_the_config_has_none(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "clone")
    (repo / ".dvc" / "config").write_text("")
    assert rm.read_remote(repo) is None
    assert "no DVC remote is configured" in str(rm.problem(None))
    assert rm.set_bucket(repo, "fresh-bucket") == "gs://fresh-bucket"
    remote = rm.read_remote(repo)
    assert remote is not None
    assert remote.url == "gs://fresh-bucket"


def test_google_remote_needs_credentials_and_a_reachable_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Google itself cannot be reached here: a local socket stands in for storage.googleapis.com."""
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    remote = rm.Remote("storage", "gs://my-mri-data")
    assert "no Google credentials" in str(rm.problem(remote, timeout=1))
    adc = tmp_path / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir()
    adc.write_text("{}")
    monkeypatch.setattr(rm, "GOOGLE_STORAGE", ("127.0.0.1", free_port()))  # nothing listens
    assert "not reachable within 1 s" in str(rm.problem(remote, timeout=1))
    with socket.socket() as google:
        google.bind(("127.0.0.1", 0))
        google.listen()
        monkeypatch.setattr(rm, "GOOGLE_STORAGE", google.getsockname())
        assert rm.problem(remote, timeout=1) is None
        anonymous = rm.Remote("storage", "gs://x-bucket", {"allow_anonymous_login": "true"})
        adc.unlink()
        assert rm.problem(anonymous, timeout=1) is None


def test_verify_without_data_dvc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "clone")
    assert main(["--repo", str(repo), "verify"]) == 1
    assert "no data.dvc" in capsys.readouterr().err
    assert main(["--repo", str(repo), "fetch"]) == 0
    assert "there is no data.dvc" in capsys.readouterr().out
