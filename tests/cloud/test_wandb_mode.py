"""W&B goes online when a key is present and WANDB_MODE is unset: through make, in the
train image and on Vertex AI (the resolved mode, per path).

Vertex AI and Secret Manager cannot exist here: the job spec is rendered with DRY_RUN=1
and the secret comes from the loopback stand-in of tests/cloud/conftest.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from lightning_app.training.runinfo import wandb_mode
from tests.conftest import REPO

PRINT_MODE = (
    'wandb-mode-probe: ; @$(RUN) python -c "import os; '
    'from lightning_app.training.runinfo import wandb_mode; print(wandb_mode(os.environ))"'
)


def make_mode(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-s", "--eval", PRINT_MODE, "wandb-mode-probe"],
        cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_make_passes_the_callers_wandb_settings_through() -> None:
    """The Makefile sets no WANDB_MODE of its own (it used to force offline)."""
    assert make_mode(WANDB_API_KEY="k") == "online"
    assert make_mode() == "offline"
    assert make_mode(WANDB_API_KEY="k", WANDB_MODE="offline") == "offline"


def test_the_train_image_sets_no_wandb_mode() -> None:
    text = (REPO / "dockerfiles/train.dockerfile").read_text().replace("\\\n", " ")
    env_lines = " ".join(line for line in text.splitlines() if line.strip().startswith("ENV "))
    image_env = dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", env_lines))
    assert "WANDB_MODE" not in image_env
    assert wandb_mode({**image_env, "WANDB_API_KEY": "k"}) == "online"
    # Cloud Build's smoke run passes the key only
    assert "-e WANDB_MODE" not in (REPO / "cloudbuild.yaml").read_text()


@pytest.mark.slow
def test_a_vertex_job_with_a_key_in_secret_manager_logs_online(
    google: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The rendered job's env has the secret's name and no WANDB_MODE; the entrypoint goes online."""
    import yaml

    from lightning_app.cloud.vertex import main as vertex_main
    from lightning_app.train_entry import main

    env = {"PROJECT": "demo", "DISPLAY_NAME": "job", "DRY_RUN": "1"}
    assert vertex_main(["--config", str(REPO / "configs/smoke.yaml"), "--out", str(tmp_path)], env) == 0
    capsys.readouterr()
    job = yaml.safe_load((tmp_path / "job.yaml").read_text())
    job_env = {e["name"]: e["value"] for e in job["workerPoolSpecs"][0]["containerSpec"]["env"]}
    assert "WANDB_API_KEY_SECRET" in job_env
    assert "WANDB_MODE" not in job_env

    for name in ("WANDB_MODE", "WANDB_API_KEY"):  # restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    secret = "projects/p/secrets/wandb/versions/latest"
    with pytest.raises(SystemExit) as info:  # --print_config exits after resolving
        main(["fit", "--config", str(REPO / "configs/smoke.yaml"), "--print_config"],
             {**google, "WANDB_API_KEY_SECRET": secret})  # fmt: skip
    assert info.value.code == 0
    assert os.environ["WANDB_API_KEY"] == "wandb-key-123"
    assert os.environ["WANDB_MODE"] == "online"
