"""DDP through the train image's entrypoint: 2 CPU processes (gloo), as on a Vertex AI replica.

The command is the one the Vertex AI job runs (``python -m lightning_app.train_entry fit``)
with ``--trainer.strategy ddp --trainer.accelerator cpu --trainer.devices 2`` on the real
``small_br35h`` subset. Vertex AI itself cannot exist here, so its environment is a dict:
a one-replica ``CLUSTER_SPEC`` whose rendezvous port is a free loopback port, and ``gs://``
output URIs read through a local stand-in for the ``/gcs/`` FUSE mount (``GCS_FUSE_ROOT``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port


@pytest.mark.slow
def test_ddp_fit_writes_metrics_and_checkpoint_once_by_rank_zero(small_br35h: Path, tmp_path: Path) -> None:
    port = free_port()
    gcs = tmp_path / "gcs"
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "GCS_FUSE_ROOT": str(gcs),
        "AIP_MODEL_DIR": "gs://bucket/job/model/",
        "AIP_CHECKPOINT_DIR": "gs://bucket/job/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://bucket/job/logs/",
        "CLUSTER_SPEC": json.dumps(
            {"cluster": {"workerpool0": [f"127.0.0.1:{port}"]}, "task": {"type": "workerpool0", "index": 0}}
        ),
    }
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        env.pop(key, None)
    cmd = [
        sys.executable, "-m", "lightning_app.train_entry", "fit",
        "--config", str(REPO / "configs/smoke.yaml"),
        "--data.data_dir", str(small_br35h),
        "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "2",
        "--trainer.limit_test_batches", "2",
        "--trainer.strategy", "ddp",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "2",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # Two processes joined one gloo group, rendezvous at the CLUSTER_SPEC address.
    assert "MEMBER: 2/2" in out, out[-4000:]

    runs = gcs / "bucket/job/checkpoints"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"], "each rank must share one run dir"
    run_dir = runs / "version_0"
    metrics_files = list(gcs.rglob("metrics.json"))
    assert sorted(metrics_files) == sorted(
        [
            run_dir / "metrics.json",
            gcs / "bucket/job/model/metrics.json",
            gcs / "bucket/job/logs/metrics.json",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["test/acc"] <= 1.0
    assert metrics["class_names"] == ["no_tumor", "tumor"]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len([c for c in checkpoints if c.startswith("best-")]) == 1
    assert "last.ckpt" in checkpoints
    # Rank 0 alone reports and publishes: one summary, one copy of the model.
    assert out.count("run dir:") == 1
    assert out.count("published:") == len(list((gcs / "bucket/job/model").iterdir())) + 3
    model_dir = gcs / "bucket/job/model"
    assert {"state_dict.pt", "index_to_name.json", "model_meta.json", "model.ckpt"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert json.loads((model_dir / "index_to_name.json").read_text()) == {"0": "no_tumor", "1": "tumor"}
