"""``make deploy-model``: the archive comes from the model registry only, named by alias or version.

Real here: the registry's bucket in fake-gcs-server, the session's ``.mar`` published in it,
the fetch and its sha256 check. Cloud Build (``gcloud builds submit``, a GCP online API)
cannot run here: it goes through :class:`~lightning_app.cloud.cloud_run.CloudRun`, printed in
a dry run, or run as a stand-in ``gcloud`` script on PATH that records its arguments.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from lightning_app.cloud import gcs
from lightning_app.cloud.deploy_model import main as deploy
from lightning_app.cloud.deploy_model import mar_version
from lightning_app.cloud.registry import MAR, Registry

pytestmark = pytest.mark.slow


def publish(registry: Registry, mar: Path, *aliases: str) -> str:
    """A registry version of ``mar`` (as ``make register`` records it), then ``aliases`` moved to it."""
    version = registry.publish({MAR: mar}, {"model_version": mar_version(mar)})
    for alias in aliases:
        registry.move_alias(alias, version, expected=registry.alias(alias))
    return version


@pytest.fixture
def registry(gcs_bucket: str) -> Registry:
    """The registry in the emulator's bucket (``make deploy-model BUCKET=...`` finds it there)."""
    return Registry.at(f"{gcs_bucket}/registry/brain_mri")


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_deploy_reads_the_alias_or_version_from_the_registry_and_refuses_the_rest(
    gcs_bucket: str, registry: Registry, mar_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"BUCKET": gcs_bucket}
    out = tmp_path / "model_store" / "brain_mri.mar"
    run = ["--out", str(out), "--dry-run"]
    v1 = publish(registry, mar_file, "candidate")

    # nothing is production yet; a candidate has passed no gate
    assert deploy(run, env) == 2
    assert errors(capsys) == [
        f"error: alias production points at no version in {registry.root} yet: "
        "make promote VERSION=vN ALIAS=production"
    ]
    assert deploy(["--version", v1, *run], env) == 2
    assert errors(capsys) == ["error: v1 is neither staging nor production: make promote VERSION=v1 first"]
    assert not out.exists()

    for alias in ("staging", "production"):
        registry.move_alias(alias, v1, expected=registry.alias(alias))
    assert deploy(run, env) == 0  # ALIAS defaults to production
    printed = capsys.readouterr().out
    assert f"registry:   {registry.root} v1 (production)" in printed
    assert f"version:    {mar_version(mar_file)}" in printed
    command = shlex.split(printed.strip().splitlines()[-1].removeprefix("+ "))
    assert command[:3] == ["gcloud", "builds", "submit"]
    subs = dict(pair.split("=", 1) for pair in command[4].removeprefix("--substitutions=").split(","))
    assert subs["_MAR_URI"] == f"{registry.root}/v1/brain_mri.mar"
    assert (subs["_REGISTRY"], subs["_REGISTRY_ALIAS"]) == (registry.root, "production")
    assert out.read_bytes() == mar_file.read_bytes()

    # by number: the UI follows the alias that holds it
    assert deploy(["--version", "1", *run], env) == 0
    assert "_REGISTRY_ALIAS=production" in capsys.readouterr().out

    bad = [
        (["--alias", "prod"], "error: unknown alias 'prod': choose one of candidate, staging, production"),
        (["--alias", "candidate"], "error: deploy takes ALIAS=production or ALIAS=staging, not candidate"),
        (["--alias", "staging", "--version", "v1"], "error: name one registry alias or one version"),
        (["--version", "v9"], f"error: no version v9 in {registry.root}"),
        (["--version", "latest"], "error: not a registry version: 'latest' (expected v1, v2, ...)"),
    ]
    for args, line in bad:
        assert deploy([*args, *run], env) == 2
        (said,) = errors(capsys)
        assert said.startswith(line), said


def test_a_broken_or_tampered_archive_replaces_nothing(
    registry: Registry, mar_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"REGISTRY": registry.root}
    out = tmp_path / "model_store" / "brain_mri.mar"
    good = publish(registry, mar_file, "staging", "production")
    run = ["--out", str(out), "--dry-run"]
    assert deploy(run, env) == 0
    capsys.readouterr()

    broken = tmp_path / "broken.mar"
    broken.write_bytes(b"not a zip")
    v2 = registry.publish({MAR: broken}, {"model_version": "x"})
    registry.move_alias("staging", v2, expected=registry.alias("staging"))
    assert deploy(["--alias", "staging", *run], env) == 2
    (said,) = errors(capsys)
    assert said.startswith("error: ") and "is not a TorchServe model archive" in said

    gcs.write_bytes(registry.uri(good, MAR), broken.read_bytes())  # replaced behind the record's back
    assert deploy(run, env) == 2
    assert errors(capsys) == [f"error: {registry.uri(good, MAR)} does not match its recorded sha256"]
    assert out.read_bytes() == mar_file.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["brain_mri.mar"]  # no partial files


def test_deploy_submits_cloud_build_through_the_adapter_or_says_gcloud_is_missing(
    registry: Registry,
    mar_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gcloud cannot exist here: a stand-in script records the call; without it, one line."""
    publish(registry, mar_file, "staging", "production")
    env = {"REGISTRY": registry.root, "PROJECT": "p"}
    out = tmp_path / "store" / "brain_mri.mar"
    log, bin_dir = tmp_path / "gcloud.log", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(log))}\n')
    (bin_dir / "gcloud").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert deploy(["--out", str(out), "--substitution", "_REGION=x"], env) == 0, errors(capsys)
    (call,) = log.read_text().splitlines()
    assert call.startswith("builds submit --config=cloudbuild.yaml --substitutions=_MAR_URI=")
    assert call.endswith(",_REGION=x . --project=p")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert deploy(["--out", str(out)], env) == 2
    assert errors(capsys) == ["error: gcloud not found: install the Google Cloud CLI, or pass DRY_RUN=1"]
