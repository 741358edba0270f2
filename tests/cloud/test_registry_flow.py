"""register -> promote -> rollout (dry run), one command each, on a real GCS emulator.

What runs for real: fake-gcs-server (the registry's bucket, with generation preconditions),
the session's trained run and its ``.mar``, the golden answers computed from that archive,
the golden gate serving the archive with ``python -m serve`` (LitServe) on 127.0.0.1, and the
dry-run canary probing the version's archive served the same way in place of the tagged URL.
What cannot exist here: W&B's online registry (``make register`` is given a stand-in with the
:class:`~lightning_app.cloud.wandb_view.ModelView` interface that records the call) and
Cloud Run / Cloud Build (``DRY_RUN``: the gcloud commands are printed).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from lightning_app.cloud import gcs
from lightning_app.cloud.promote import main as promote
from lightning_app.cloud.register import dvc_md5
from lightning_app.cloud.register import main as register
from lightning_app.cloud.registry import Registry
from lightning_app.cloud.rollout import main as rollout
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow


class RecordingView:
    """Stand-in for W&B's registry (its online service cannot be reached here)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def log_version(
        self, version: str, files: dict[str, Path], metadata: dict[str, Any], run_dir: Path
    ) -> str:
        self.calls.append(
            {"version": version, "files": dict(files), "metadata": metadata, "run_dir": run_dir}
        )
        return f"recorded {version}"


class FailingView:
    """Stand-in for W&B when its service cannot be reached."""

    def log_version(
        self, version: str, files: dict[str, Path], metadata: dict[str, Any], run_dir: Path
    ) -> str:
        raise ConnectionError("api.wandb.ai unreachable")


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_register_promote_rollout_end_to_end(
    gcs_bucket: str,
    trained_run: Path,
    mar_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "BUCKET": gcs_bucket.removeprefix("gs://"),
        # the session's smoke model is trained on 200 scans: floors it can meet (defaults: 0.90 / 0.95 / 0.10)
        "GATE_MIN_ACCURACY": "0.5",
        "GATE_MIN_AUROC": "0.5",
        "GATE_MAX_OOD_FLAGGED": "0.5",
        "GATE_RUNTIME": "litserve",
        "CANARY_REQUESTS": "8",
        "CANARY_MAX_P95_MS": "5000",
        "PATH": "/usr/bin:/bin",
    }
    view = RecordingView()
    args = ["--run", str(trained_run), "--mar", str(mar_file), "--golden-per-class", "2"]
    assert register(args, env, view) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    registry = Registry(f"{gcs_bucket}/registry/brain_mri")
    assert f"registered v1: {registry.root}/v1/ (candidate -> v1)" in out and "W&B:       recorded v1" in out
    record = registry.record("v1")
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert record["data_dvc_md5"] == dvc_md5(REPO / "data.dvc") and record["data_dvc_md5"].endswith(".dir")
    assert record["git_commit"] == metrics["git_commit"] and record["data_version"] == metrics["data_version"]
    assert len(record["golden"]) == 4 and {a["prediction"] for a in record["golden"].values()} <= {
        "tumor",
        "no_tumor",
    }
    assert gcs.read_bytes(registry.uri("v1", "brain_mri.mar")) == mar_file.read_bytes()
    assert "# Model card" in gcs.read_bytes(registry.uri("v1", "model_card.md")).decode()
    assert registry.alias("candidate").version == "v1" and registry.alias("staging").version is None
    (call,) = view.calls
    assert call["version"] == "v1" and call["run_dir"] == trained_run
    assert set(call["files"]) == {"brain_mri.mar", "metrics.json", "model_card.md"}

    # a floor the model cannot meet: refused in one line, exit 1, no alias written, no server started
    assert promote(["--version", "v1", "--alias", "staging"], {**env, "GATE_MIN_ACCURACY": "1.01"}) == 1
    captured = capsys.readouterr()
    (refused,) = lines(captured.err)
    assert refused.startswith("error: v1 not promoted to staging: gate failed: quality: test accuracy ")
    assert "< 1.010" in captured.err and registry.alias("staging").version is None
    assert promote(["--version", "v1", "--alias", "production"], env) == 2
    assert lines(capsys.readouterr().err) == [
        "error: v1 is not staging: promote it to staging first (production takes staging's version)"
    ]

    assert promote(["--version", "v1", "--alias", "staging"], env) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for gate in ("parity", "quality", "ood", "golden"):
        assert f"gate {gate:8} pass" in out
    assert "golden 4/4" in out and "staging -> v1 (was unset)" in out
    staging = json.loads(gcs.read_bytes(f"{registry.root}/aliases/staging.json"))
    assert staging["version"] == "v1" and set(staging["gates"]) == {"parity", "quality", "ood", "golden"}

    # exactly `make rollout VERSION=v1 DRY_RUN=1`: gcloud printed, the archive served here is probed
    assert rollout(["--version", "v1", "--dry-run"], env) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "dry run: probing v1's archive served at http://127.0.0.1:" in out
    commands = [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ gcloud")]
    assert commands[0][:3] == ["gcloud", "builds", "submit"]
    assert f"--substitutions=_MAR_URI={registry.uri('v1', 'brain_mri.mar')},_IMAGE=" in " ".join(commands[0])
    (deploy,) = [c for c in commands if c[1:3] == ["run", "deploy"]]
    assert {"--no-traffic", "--tag=candidate"} <= set(deploy) and deploy[4].endswith("/serve:v1")
    shifts = [c[5] for c in commands if c[1:4] == ["run", "services", "update-traffic"]]
    assert shifts == ["--to-tags=candidate=10", "--to-tags=candidate=50", "--to-tags=candidate=100"]
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("canary")] == [
        "canary at   0 %", "canary at  10 %", "canary at  50 %", "canary at 100 %",
    ]  # fmt: skip
    assert "v1 serves 100 % of the traffic" in out and "rolled back" not in out
    # the candidate revision stops answering: rolled back before any traffic, one line, exit 1
    gone = f"http://127.0.0.1:{free_port()}"
    assert rollout(["--version", "v1", "--dry-run", "--probe-url", gone], env) == 1
    captured = capsys.readouterr()
    first_two = ", ".join(f"{name}: no answer" for name in sorted(record["golden"])[:2])
    assert lines(captured.err) == [
        f"error: v1 rolled back: errors 12/12 (100.0%); golden agreement 0.0% < 100.0% ({first_two})"
    ]
    assert "--to-revisions=brain-mri-serve-serving=100" in captured.out and "candidate=10" not in captured.out

    # W&B failing does not undo the registry's record: a warning, candidate moves, staging stays
    assert register(args, env, FailingView()) == 0
    captured = capsys.readouterr()
    assert lines(captured.err) == ["warning: v2 not shown in W&B: ConnectionError: api.wandb.ai unreachable"]
    assert registry.alias("candidate").version == "v2" and registry.alias("staging").version == "v1"
    assert rollout(["--version", "v2", "--dry-run"], env) == 2
    assert lines(capsys.readouterr().err) == [
        "error: v2 is neither staging nor production: make promote VERSION=v2 first"
    ]
    assert rollout(["--version", "v9", "--dry-run"], env) == 2
    assert lines(capsys.readouterr().err) == ["error: no version v9 in " + registry.root]
