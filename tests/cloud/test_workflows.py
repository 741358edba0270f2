"""The GitHub workflows do what docs/development.md says: triggers, order, and real targets.

GitHub Actions cannot run here: the schema check is ``test_cloudbuild.py``'s (check-jsonschema,
offline); these tests read the workflows as data and check them against the repository
(Makefile targets, the data CLI's options, the docs site's build) so a renamed target or
option breaks a test here rather than a run on GitHub.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.conftest import REPO

WORKFLOWS = REPO / ".github/workflows"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True


def runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def uses(job: dict[str, Any]) -> list[str]:
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def test_every_make_target_a_workflow_calls_exists() -> None:
    targets = make_targets()
    called = set()
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            called |= {
                (path.name, t) for t in re.findall(r"(?:^|[;&|(]\s*)make ([a-z][\w-]*)", runs(job), re.M)
            }
    assert {t for _, t in called} >= {
        "promote",
        "rollout",
        "docs",
        "validate-data",
        "data-evidence",
        "test-unit",
    }
    assert sorted(c for c in called if c[1] not in targets) == []


def test_every_job_has_a_timeout() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            assert job.get("timeout-minutes"), (path.name, name)


def test_registry_runs_on_an_alias_change_and_gates_before_it_rolls_out() -> None:
    wf = load("registry.yml")
    on = triggers(wf)
    assert on["repository_dispatch"]["types"] == ["registry-alias-changed"]
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["version"]["required"] and inputs["alias"]["options"] == ["staging", "production"]
    jobs = wf["jobs"]
    assert jobs["image-test"]["needs"] == "version"
    assert set(jobs["promote"]["needs"]) == {"version", "image-test"}
    assert set(jobs["rollout"]["needs"]) == {"version", "promote"}
    assert "bash .ci/images" in runs(jobs["image-test"])  # make images && make image-test
    assert "model_store/brain_mri.mar" in runs(jobs["version"])  # the pulled version goes into the image
    assert 'make promote VERSION="$VERSION" ALIAS="$ALIAS"' in runs(jobs["promote"])
    assert 'make rollout VERSION="$VERSION" $DRY_RUN_FLAG' in runs(jobs["rollout"])
    for job in jobs.values():  # payload values reach scripts as environment variables only
        assert "client_payload" not in runs(job) and "inputs." not in runs(job)
    assert wf["concurrency"]["cancel-in-progress"] is False  # a rollout is never cut off midway


def test_google_cloud_access_comes_from_repository_settings_only() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        wf = yaml.safe_load(path.read_text())
        for job in wf["jobs"].values():
            for step in job["steps"]:
                if step.get("uses", "").startswith("google-github-actions/auth@"):
                    values = step["with"].values()
                    assert all(re.fullmatch(r"\$\{\{ (vars|secrets)\.[A-Z_]+ \}\}", v) for v in values), path
                    assert (
                        wf.get("permissions", {}).get("id-token") == "write"
                        or "credentials_json" in step["with"]
                    )
        text = path.read_text()
        assert not re.search(r"projects/\d+|[a-z][a-z0-9-]+\.iam\.gserviceaccount\.com", text), path


def test_data_workflow_pulls_validates_and_posts_stats_and_the_diff_for_a_data_dvc_pr() -> None:
    wf = load("data.yml")
    assert "data.dvc" in triggers(wf)["pull_request"]["paths"]
    job = wf["jobs"]["validate"]
    script = runs(job)
    for command in ("make data SOURCE=remote", "make validate-data", "make data-evidence", "origin/main"):
        assert command in script, command
    assert '>> "$GITHUB_STEP_SUMMARY"' in script and "gh pr comment" in script
    assert job["defaults"]["run"]["shell"] == "bash"  # pipefail: `make validate-data | tee` still fails
    (step,) = [s for s in job["steps"] if "python -m lightning_app.data stats" in s.get("run", "")]
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", step["run"])) - {"--frozen"}  # uv run --frozen
    assert options >= {"--root", "--base-manifest", "--base-dvc", "--head-dvc", "--out"}
    help_text = subprocess.run(
        [sys.executable, "-m", "lightning_app.data", "stats", "--help"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    for option in options:
        assert option in help_text, option


def test_pages_publishes_the_strict_make_docs_site() -> None:
    wf = load("pages.yml")
    assert triggers(wf)["push"]["branches"] == ["main"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert "make docs" in runs(build)
    assert "mkdocs build --strict" in (REPO / "Makefile").read_text().split("\ndocs:", 1)[1].split("\n\n")[0]
    mkdocs = yaml.safe_load((REPO / "configs/mkdocs.yml").read_text())
    assert mkdocs["strict"] is True
    site = (REPO / "configs" / mkdocs["site_dir"]).resolve().relative_to(REPO)
    (upload,) = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert Path(upload["with"]["path"]) == site
    assert uses(deploy) == ["actions/deploy-pages"] and deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}


def test_ci_unit_matrix_covers_two_systems_two_pythons_the_lock_admits() -> None:
    wf = load("ci.yml")
    unit = wf["jobs"]["unit"]
    matrix = unit["strategy"]["matrix"]
    assert any(o.startswith("ubuntu") for o in matrix["os"]) and any(
        o.startswith("macos") for o in matrix["os"]
    )
    assert matrix["python"] == ["3.11", "3.12"]
    assert "make test-unit" in runs(unit)
    assert any(s.get("with", {}).get("enable-cache") for s in unit["steps"])
    recipe = (REPO / "Makefile").read_text().split("\ntest-unit:", 1)[1].split("\n\n")[0]
    assert 'pytest -m "not slow"' in recipe
    lock = tomllib.loads((REPO / "uv.lock").read_text())["requires-python"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    for python in matrix["python"]:
        assert SpecifierSet(project).contains(f"{python}.0"), python
        assert SpecifierSet(lock).contains(f"{python}.0"), python
    assert "make test" in runs(wf["jobs"]["test"])  # the full suite stays


@pytest.mark.parametrize("where", [".ci/run", ".ci/images", "Makefile"])
def test_pip_audit_runs_in_the_workflow_only(where: str) -> None:
    audit = load("ci.yml")["jobs"]["audit"]
    assert "pip-audit" in runs(audit) and "uv export --frozen --all-groups" in runs(audit)
    assert "pip-audit" not in (REPO / where).read_text()  # it needs the internet
