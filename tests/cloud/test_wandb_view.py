"""The registry's W&B adapter, offline (W&B's online registry cannot be reached here).

Offline, ``log_version`` resumes the training run found in the run directory and logs the
version as a ``model`` artifact into that run's local record; the link into the registry
collection needs the online service and is not made (it says so). ``make register``'s own
tests use a stand-in with the same interface.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lightning_app.cloud.wandb_view import WandbModelView, training_run_id


def test_the_training_run_id_is_read_from_the_run_directory(tmp_path: Path) -> None:
    assert training_run_id(tmp_path) is None
    (tmp_path / "wandb" / "offline-run-20261203_164353-olmi3nn4").mkdir(parents=True)
    (tmp_path / "wandb" / "run-20261204_101010-zz9").mkdir()
    (tmp_path / "wandb" / "latest-run").mkdir()
    assert training_run_id(tmp_path) == "zz9"


def test_offline_the_version_is_a_model_artifact_of_the_training_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "version_0"
    run_dir.mkdir()
    training = wandb.init(project="brain-mri", dir=str(run_dir), mode="offline")
    training_id = training.id
    training.finish()
    mar = run_dir / "brain_mri.mar"
    mar.write_bytes(b"archive bytes")
    shown = WandbModelView("brain-mri", mode="offline").log_version(
        "v7", {"brain_mri.mar": mar}, {"git_commit": "abc123"}, run_dir
    )
    assert shown == (
        f"offline W&B run {training_id} (the link to wandb-registry-model/brain-mri waits for `wandb sync`)"
    )
    wanted = (b"brain_mri", b'"registry_version":"v7"', b"candidate", b"abc123")
    # W&B's service process writes the record after finish() returns, slowly on a busy machine;
    # the resumed run's record may sit in a directory of its own: read every record of the run dir
    deadline = time.monotonic() + 120
    while True:
        records = sorted((run_dir / "wandb").rglob("*.wandb"))
        logged = b"".join(p.read_bytes() for p in records)
        if all(w in logged for w in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [w for w in wanted if w not in logged] == []
