"""cloudbuild.yaml and the GitHub workflows: schema-valid and consistent with the repo.

Cloud Build, Artifact Registry and Cloud Run cannot run here; the file that drives them
is checked as far as tools allow: the vendored JSON schemas (check-jsonschema, offline)
and the cross-references a typo would break (Dockerfiles, substitutions, image names,
step ids, secrets).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent
CLOUDBUILD = REPO / "cloudbuild.yaml"
BUILTINS = {"PROJECT_ID", "PROJECT_NUMBER", "LOCATION", "BUILD_ID", "COMMIT_SHA", "SHORT_SHA", "REPO_NAME"}
IMAGE = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}/"
NAMES = ("train", "serve", "ui")


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    return yaml.safe_load(CLOUDBUILD.read_text())


def step(build: dict[str, Any], step_id: str) -> dict[str, Any]:
    (found,) = [s for s in build["steps"] if s.get("id") == step_id]
    return found


def flat(s: dict[str, Any]) -> str:
    return " ".join(str(a) for a in s.get("args", []))


def test_cloudbuild_and_workflows_match_their_schemas() -> None:
    for schema, files in (
        ("vendor.cloudbuild", [CLOUDBUILD]),
        ("vendor.github-workflows", sorted((REPO / ".github/workflows").glob("*.yml"))),
    ):
        assert files
        proc = subprocess.run(
            [str(BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_substitution_is_defined_used_and_has_a_default(build: dict[str, Any]) -> None:
    text = CLOUDBUILD.read_text().replace("$$", "")
    body = text.split("\nsubstitutions:", 1)[0] + text.split("\noptions:", 1)[1]
    used = set(re.findall(r"\$\{(\w+)\}", body)) | set(re.findall(r"\$([A-Z_][A-Z0-9_]*)", body))
    defined = set(build["substitutions"])
    assert used - defined - BUILTINS == set(), "referenced but not defined"
    assert defined - used == set(), "defined but never used"
    assert all(name.startswith("_") for name in defined)
    assert build["options"].get("substitutionOption") != "ALLOW_LOOSE"


@pytest.mark.parametrize("name", NAMES)
def test_each_image_is_built_from_its_dockerfile_tagged_pushed_and_listed(
    build: dict[str, Any], name: str
) -> None:
    built = step(build, f"build-{name}")
    args = built["args"]
    dockerfile = next(a.split("=", 1)[1] for a in args if a.startswith("--file="))
    dockerfile = dockerfile.replace("${_SERVE_DOCKERFILE}", build["substitutions"]["_SERVE_DOCKERFILE"])
    assert dockerfile == f"dockerfiles/{name}.dockerfile"  # by default
    assert (REPO / dockerfile).is_file()
    tags = {a.split("=", 1)[1] for a in args if a.startswith("--tag=")}
    assert tags == {f"{IMAGE}{name}:$COMMIT_SHA", f"{IMAGE}{name}:latest"}
    assert tags <= set(build["images"])
    push = step(build, f"push-{name}")
    assert push["args"] == ["push", "--all-tags", f"{IMAGE}{name}"]
    assert args[-1] == "."


def test_the_serve_service_can_be_the_lean_litserve_image(build: dict[str, Any]) -> None:
    """``_SERVE_DOCKERFILE=dockerfiles/serve-lite.dockerfile`` builds and deploys LitServe without torch."""
    args = step(build, "build-serve")["args"]
    assert "--file=${_SERVE_DOCKERFILE}" in args
    lite = (REPO / "dockerfiles/serve-lite.dockerfile").read_text()
    assert "--group serve-lite" in lite and "SERVE_RUNTIME=litserve" in lite
    assert "COPY ${MAR} /app/model_store/brain_mri.mar" in lite  # the same archive as the default image


def test_images_list_holds_exactly_the_built_tags(build: dict[str, Any]) -> None:
    expected = {f"{IMAGE}{n}:{t}" for n in NAMES for t in ("$COMMIT_SHA", "latest")}
    assert set(build["images"]) == expected


def test_steps_wait_for_existing_steps_and_deploy_pushed_images(build: dict[str, Any]) -> None:
    ids = [s["id"] for s in build["steps"]]
    assert len(ids) == len(set(ids))
    for s in build["steps"]:
        for dep in s.get("waitFor", []):
            assert dep == "-" or ids.index(dep) < ids.index(s["id"]), (s["id"], dep)
    serve, ui = step(build, "deploy-serve"), step(build, "deploy-ui")
    assert "push-serve" in serve["waitFor"]
    assert {"push-ui", "deploy-serve"} <= set(ui["waitFor"])
    assert f"--image={IMAGE}serve:$COMMIT_SHA" in serve["args"]
    assert f"--image={IMAGE}ui:$COMMIT_SHA" in flat(ui)
    for flag in ("memory", "cpu", "concurrency", "min-instances"):
        assert f"--{flag}=${{_SERVE_{flag.upper().replace('-', '_')}}}" in serve["args"]
        assert f"--{flag}=${{_UI_{flag.upper().replace('-', '_')}}}" in flat(ui)
    # The ui is pointed at the serve service's own URL.
    assert "services describe ${_SERVE_SERVICE}" in flat(ui)
    assert "INFERENCE_URL=$${serve_url}" in flat(ui)
    assert "serve_url=$$(gcloud run services describe" in flat(ui)


def test_serve_image_gets_its_model_from_the_context_or_gcs(build: dict[str, Any]) -> None:
    assert "--build-arg=MAR=model_store/brain_mri.mar" in step(build, "build-serve")["args"]
    assert step(build, "build-serve")["waitFor"] == ["fetch-mar"]
    assert '"${_MAR_URI}" model_store/brain_mri.mar' in flat(step(build, "fetch-mar"))
    for ignore in (".dockerignore", ".gcloudignore"):
        assert "!model_store/brain_mri.mar" in (REPO / ignore).read_text().splitlines()
    assert "/model_store/" in (REPO / ".gitignore").read_text().splitlines()


def test_the_wandb_key_comes_from_secret_manager_only(build: dict[str, Any]) -> None:
    secrets = {s["env"]: s["versionName"] for s in build["availableSecrets"]["secretManager"]}
    assert secrets == {"WANDB_API_KEY": "projects/$PROJECT_ID/secrets/${_WANDB_SECRET}/versions/latest"}
    users = [s for s in build["steps"] if "secretEnv" in s]
    assert users
    assert all(set(s["secretEnv"]) <= set(secrets) for s in users)
    text = CLOUDBUILD.read_text()
    assert not re.search(r"WANDB_API_KEY\s*[=:]\s*\S", text.replace("env: WANDB_API_KEY", ""))
    assert "-e WANDB_API_KEY " in flat(users[0])  # passed through by name, never by value


def test_dockerfile_copy_sources_exist_and_are_in_the_build_context() -> None:
    ignore = {line.rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    for name in NAMES:
        text = (REPO / f"dockerfiles/{name}.dockerfile").read_text()
        for line in text.splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                *sources, _dest = line.split()[1:]
                for src in sources:
                    if src.startswith("${"):
                        continue  # the .mar build arg, checked above
                    assert (REPO / src).exists(), (name, src)
                    assert f"!{src.rstrip('/')}" in ignore, (name, src)


def test_ci_runs_the_same_uv_commands_as_the_dockerfiles() -> None:
    ci = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    steps = ci["jobs"]["image-steps"]["steps"]
    groups = [m["group"] for m in ci["jobs"]["image-steps"]["strategy"]["matrix"]["include"]]
    assert sorted(groups) == sorted(NAMES)
    ci_runs = [s["run"] for s in steps if s.get("run", "").startswith("uv sync")]
    for name in NAMES:
        docker_runs = re.findall(
            r"^RUN (uv sync .*)$", (REPO / f"dockerfiles/{name}.dockerfile").read_text(), re.M
        )
        expected = [r.replace("${{ matrix.group }}", name) for r in ci_runs]
        if name != "serve":  # only the serving image skips GPU-only packages ($NO_GPU)
            expected = [r.replace(" $NO_GPU", "") for r in expected]
        assert docker_runs == expected, name
    serve = next(
        m for m in ci["jobs"]["image-steps"]["strategy"]["matrix"]["include"] if m["group"] == "serve"
    )
    dockerfile = (REPO / "dockerfiles/serve.dockerfile").read_text()
    (arg,) = re.findall(r'^ARG NO_GPU="([^"]*)"', dockerfile, re.M | re.S)
    assert serve["no_gpu"].split() == arg.replace("\\\n", " ").split()
    test_job = ci["jobs"]["test"]
    runs = " ".join(s.get("run", "") for s in test_job["steps"])
    assert "uv sync --frozen" in runs
    assert "make test" in runs
    assert "openjdk-17" in runs
    assert "chromium" in runs
    assert any(s.get("with", {}).get("enable-cache") for s in test_job["steps"])
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme


def test_cloud_run_overload_settings_agree_with_the_instance_limits(build: dict[str, Any]) -> None:
    """Cloud Run sends fewer requests than an instance refuses at, and waits longer than it does."""
    import re

    import yaml

    from lightning_app.inference.settings import MAX_CONCURRENCY

    subs = build["substitutions"]
    properties = (REPO / "serve" / "config.properties").read_text()
    queue = int(re.search(r"^job_queue_size=(\d+)$", properties, re.M).group(1))
    timeout = yaml.safe_load((REPO / "serve" / "model-config.yaml").read_text())["responseTimeout"]
    assert int(subs["_SERVE_CONCURRENCY"]) <= min(queue, MAX_CONCURRENCY)
    assert queue == MAX_CONCURRENCY  # both runtimes refuse at the same point
    assert int(subs["_SERVE_TIMEOUT"].rstrip("s")) > timeout
    assert "--timeout=${_SERVE_TIMEOUT}" in step(build, "deploy-serve")["args"]
