"""``lightning_app.cloud.registry`` on a real GCS emulator (fake-gcs-server, which enforces
``ifGenerationMatch``): versions are claimed once, files are checked on the way down, and an
alias moves only from the generation its mover read: two racing promotions, one winner."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from lightning_app.cloud import gcs
from lightning_app.cloud.registry import AliasRaceError, Registry, RegistryError
from lightning_app.cloud.settings import CloudSettings, CloudSettingsError


def files(tmp_path: Path, tag: str) -> dict[str, Path]:
    (tmp_path / tag).mkdir()
    out = {}
    for name in ("brain_mri.mar", "metrics.json"):
        out[name] = tmp_path / tag / name
        out[name].write_text(f"{tag} {name}")
    return out


def test_versions_are_numbered_claimed_once_and_checked_on_fetch(gcs_bucket: str, tmp_path: Path) -> None:
    settings = CloudSettings.from_env(
        {"BUCKET": gcs_bucket.removeprefix("gs://")}, dry_run=False, bucket_only=True
    )
    registry = Registry.from_settings(settings)
    assert registry.root == f"{gcs_bucket}/registry/brain_mri"
    assert registry.versions() == []
    assert registry.publish(files(tmp_path, "a"), {"git_commit": "abc"}) == "v1"
    assert registry.publish(files(tmp_path, "b"), {"git_commit": "def"}) == "v2"
    assert registry.versions() == ["v1", "v2"]
    record = registry.record("v1")
    assert (
        record["version"] == "v1"
        and record["git_commit"] == "abc"
        and set(record["files"])
        == {
            "brain_mri.mar",
            "metrics.json",
        }
    )
    got = registry.fetch("v2", "brain_mri.mar", tmp_path / "down" / "brain_mri.mar")
    assert got.read_text() == "b brain_mri.mar"
    # someone replaced the object behind the record's back: refused, nothing left on disk
    gcs.write_bytes(registry.uri("v1", "brain_mri.mar"), b"tampered")
    with pytest.raises(RegistryError, match="does not match its recorded sha256"):
        registry.fetch("v1", "brain_mri.mar", tmp_path / "down" / "v1.mar")
    assert not (tmp_path / "down" / "v1.mar").exists()
    with pytest.raises(RegistryError, match="no version v9"):
        registry.record("v9")
    with pytest.raises(RegistryError, match=r"has no file 'model_card\.md'"):
        registry.fetch("v1", "model_card.md", tmp_path / "x")
    with pytest.raises(RegistryError, match="not a registry version"):
        registry.record("latest")


def test_concurrent_registrations_get_distinct_versions(gcs_bucket: str, tmp_path: Path) -> None:
    registry = Registry(f"{gcs_bucket}/registry/brain_mri")
    start = threading.Barrier(3)
    got: list[str] = []

    def register(tag: str) -> None:
        mine = files(tmp_path, tag)
        start.wait()
        got.append(registry.publish(mine, {"tag": tag}))

    threads = [threading.Thread(target=register, args=(t,)) for t in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == ["v1", "v2", "v3"]
    for version in got:  # each version holds its own registration's files
        tag = registry.record(version)["tag"]
        assert gcs.read_bytes(registry.uri(version, "metrics.json")) == f"{tag} metrics.json".encode()


def test_alias_moves_are_atomic_and_two_racing_promotions_have_one_winner(
    gcs_bucket: str, tmp_path: Path
) -> None:
    registry = Registry(f"{gcs_bucket}/registry/brain_mri")
    for tag in "abc":
        registry.publish(files(tmp_path, tag), {})
    unset = registry.alias("staging")
    assert unset.version is None and unset.generation == 0
    moved = registry.move_alias("staging", "v1", expected=unset, by="test")
    assert registry.alias("staging").version == "v1" and moved.generation > 0

    # two promotions read the same state, then race to write it
    read = [registry.alias("staging"), registry.alias("staging")]
    start = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def promote(version: str, expected: object) -> None:
        start.wait()
        try:
            registry.move_alias("staging", version, expected=expected)  # type: ignore[arg-type]
            outcome[version] = "moved"
        except AliasRaceError as exc:
            outcome[version] = str(exc)

    threads = [threading.Thread(target=promote, args=(v, e)) for v, e in zip(("v2", "v3"), read, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [v for v, o in outcome.items() if o == "moved"]
    (loser,) = [o for o in outcome.values() if o != "moved"]
    assert len(winners) == 1
    assert (
        loser
        == f"alias staging moved to {winners[0]} while this promotion ran: nothing written, run it again"
    )
    now = registry.alias("staging")
    assert now.version == winners[0] and now.previous == "v1"
    body = json.loads(gcs.read_bytes(f"{registry.root}/aliases/staging.json"))
    assert body["version"] == winners[0] and body["previous"] == "v1"
    assert registry.aliases_of(winners[0]) == ["staging"]
    with pytest.raises(RegistryError, match="unknown alias 'latest'"):
        registry.alias("latest")
    with pytest.raises(RegistryError, match="no version v7"):
        registry.move_alias("staging", "v7", expected=now)


def test_the_registry_needs_a_bucket() -> None:
    with pytest.raises(CloudSettingsError, match="set BUCKET=gs://<bucket>"):
        CloudSettings.from_env({}, dry_run=False, bucket_only=True)
    settings = CloudSettings.from_env({"REGISTRY": "gs://b/reg/"}, dry_run=False, bucket_only=True)
    assert Registry.from_settings(settings).root == "gs://b/reg"
