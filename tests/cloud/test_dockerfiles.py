"""The three Dockerfiles: hadolint-clean, non-root, the right dependency group each.

No Docker engine exists here, so images are not built; the Dockerfiles are linted and
their RUN steps are the uv commands CI's ``image-steps`` job runs (test_cloudbuild.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent
DOCKERFILES = {
    name: REPO / f"dockerfiles/{name}.dockerfile" for name in ("train", "serve", "serve-lite", "ui")
}


def instructions(name: str) -> list[tuple[str, str]]:
    text = DOCKERFILES[name].read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_hadolint_passes_on_all_dockerfiles() -> None:
    proc = subprocess.run(
        [str(BIN / "hadolint"), *map(str, DOCKERFILES.values())], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not proc.stdout.strip(), proc.stdout


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dockerfile"
    bad.write_text("FROM python\nRUN cd /app && pip install torch\n")
    proc = subprocess.run([str(BIN / "hadolint"), str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout


@pytest.mark.parametrize("name", ["train", "serve", "ui"])
def test_two_uv_layers_for_one_group_and_a_non_root_user(name: str) -> None:
    steps = instructions(name)
    runs = [arg for op, arg in steps if op == "RUN" and arg.startswith("uv sync")]
    group = f"--no-default-groups --group {name}" + (" $NO_GPU" if name == "serve" else "")
    assert runs == [f"uv sync --frozen --no-install-project {group}", f"uv sync --frozen {group}"]
    copies = [i for i, (op, _) in enumerate(steps) if op == "COPY"]
    first_sync = steps.index(("RUN", runs[0]))
    assert steps[copies[1]][1] == "pyproject.toml uv.lock README.md ./"
    assert copies[1] < first_sync
    assert any(op == "COPY" and "lightning_app" in arg for op, arg in steps[first_sync:])
    users = [arg for op, arg in steps if op == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    assert steps[0][0] == "FROM"
    assert ":" in steps[0][1]
    assert not steps[0][1].endswith(":latest")


def test_serve_image_runs_torchserve_on_java17_from_port() -> None:
    steps = instructions("serve")
    text = DOCKERFILES["serve"].read_text()
    assert "openjdk-17-jre-headless" in text
    assert ("CMD", '["python", "-m", "serve"]') in steps
    assert re.search(r"^ARG MAR=model_store/brain_mri.mar$", text, re.M)
    assert "COPY ${MAR} /app/model_store/brain_mri.mar" in text
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "SERVE_HOST=0.0.0.0" in env
    assert "PORT=8080" in env
    # python -m serve is TorchServe in the foreground, configured by serve/config.properties.
    assert (REPO / "serve/__main__.py").is_file()
    assert (REPO / "serve/config.properties").is_file()
    assert '"--foreground"' in (REPO / "serve/launcher.py").read_text()


def test_ui_image_has_no_torch_and_reads_inference_url() -> None:
    text = DOCKERFILES["ui"].read_text()
    assert ("CMD", '["python", "-m", "lightning_app.ui"]') in instructions("ui")
    assert "INFERENCE_URL" in text
    assert "torch" not in text.replace("no torch", "")
    proc = subprocess.run(
        ["uv", "export", "--frozen", "--no-default-groups", "--group", "ui", "--no-hashes",
         "--no-emit-project"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    packages = {line.split("==")[0].strip() for line in proc.stdout.splitlines() if "==" in line}
    assert "gradio" in packages
    assert "httpx" in packages
    assert not packages & {"torch", "torchvision", "lightning", "torchserve"}


def test_serve_lite_image_is_litserve_without_torch_or_java() -> None:
    steps = instructions("serve-lite")
    text = DOCKERFILES["serve-lite"].read_text()
    runs = [arg for op, arg in steps if op == "RUN" and arg.startswith("uv sync")]
    group = "--no-default-groups --group serve-lite"
    assert runs == [f"uv sync --frozen --no-install-project {group}", f"uv sync --frozen {group}"]
    assert ("CMD", '["python", "-m", "serve"]') in steps
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "SERVE_RUNTIME=litserve" in env and "SERVE_HOST=0.0.0.0" in env and "PORT=8080" in env
    assert "openjdk" not in text
    assert [arg for op, arg in steps if op == "USER"][-1] not in ("root", "0")
    proc = subprocess.run(
        ["uv", "export", "--frozen", "--no-default-groups", "--group", "serve-lite", "--no-hashes"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    packages = {line.split("==")[0].strip() for line in proc.stdout.splitlines() if "==" in line}
    assert {"onnxruntime", "litserve", "numpy", "pillow"} <= packages
    assert not packages & {"torch", "torchvision", "lightning", "torchserve"} | {
        p for p in packages if p.startswith("nvidia-")
    }


def test_train_image_entrypoint_is_the_lightning_cli() -> None:
    steps = instructions("train")
    assert ("ENTRYPOINT", '["python", "-m", "lightning_app.train_entry"]') in steps
    assert any(op == "COPY" and arg.startswith("configs ") for op, arg in steps)


def test_images_build_offline_from_a_mounted_cache_and_record_their_commit() -> None:
    """dockerfiles/local/build.sh passes UV_OFFLINE=1 and GIT_COMMIT (Cloud Build: $COMMIT_SHA)."""
    for name in DOCKERFILES:
        steps = instructions(name)
        assert ("ARG", "UV_OFFLINE") in steps, name
        assert ("ENV", "GIT_COMMIT=${GIT_COMMIT}") in steps, name
        # after the dependency layers: a new commit does not rebuild them
        last_sync = max(i for i, (op, arg) in enumerate(steps) if op == "RUN" and arg.startswith("uv sync"))
        assert steps.index(("ENV", "GIT_COMMIT=${GIT_COMMIT}")) > last_sync, name
    assert not any("WANDB_MODE" in arg for op, arg in instructions("train") if op in ("ENV", "ARG"))


def test_the_serving_image_skips_only_packages_torch_does_not_load_on_cpu() -> None:
    """Dropping cuDNN/cuBLAS... breaks ``import torch`` (docs/deploy.md): only these go."""
    text = DOCKERFILES["serve"].read_text().replace("\\\n", " ")
    skipped = set(re.findall(r"--no-install-package (\S+?)\"?\s", text))
    assert "triton" in skipped
    # libtorch links these at load time (libcupti via kineto, libnvJitLink via cuSPARSE)
    loaded = {
        "nvidia-cudnn-cu13",
        "nvidia-cublas",
        "nvidia-nccl-cu13",
        "nvidia-cuda-cupti",
        "nvidia-nvjitlink",
    }
    assert not skipped & (loaded | {"torch"})


def test_no_weights_or_secrets_are_copied_into_images() -> None:
    for name in DOCKERFILES:
        text = DOCKERFILES[name].read_text()
        assert not re.search(r"\.(ckpt|pt|pth)\b", text), name
        assert not re.search(r"(API_KEY|SECRET|TOKEN|PASSWORD)\s*=", text), name
