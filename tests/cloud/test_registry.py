"""``lightning_app.cloud.registry`` on a real GCS emulator (fake-gcs-server, which enforces
``ifGenerationMatch``): versions are claimed once, files are checked on the way down, and an
alias moves only from the generation its mover read: two racing promotions, one winner; and
:func:`resolve`, the one way deploys, the drift job and the UI name a version."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from lightning_app.cloud import gcs
from lightning_app.cloud.registry import AliasRaceError, Registry, RegistryError, resolve
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
    with pytest.raises(gcs.StorageError, match="not a Cloud Storage URI"):
        Registry.at("/tmp/registry")


def test_resolve_names_a_version_by_alias_or_number_and_refuses_the_rest(
    gcs_bucket: str, tmp_path: Path
) -> None:
    registry = Registry.at(f"{gcs_bucket}/registry/brain_mri/")
    assert registry.root == f"{gcs_bucket}/registry/brain_mri"
    for tag in "ab":
        registry.publish(files(tmp_path, tag), {"tag": tag})
    registry.move_alias("production", "v2", expected=registry.alias("production"))

    by_alias = resolve(registry, alias="production")
    assert (by_alias.version, by_alias.alias, by_alias.name) == ("v2", "production", "v2 (production)")
    assert by_alias.record["tag"] == "b"
    assert by_alias.mar_uri == f"{registry.root}/v2/brain_mri.mar"
    assert by_alias.fetch_mar(tmp_path / "down.mar").read_text() == "b brain_mri.mar"
    by_number = resolve(registry, version="1")
    assert (by_number.version, by_number.alias, by_number.name) == ("v1", None, "v1")
    assert by_number.record["tag"] == "a"
    assert resolve(registry, version="v2").record == by_alias.record

    refused = [
        ({"alias": "staging"}, f"alias staging points at no version in {registry.root} yet: "
         "make promote VERSION=vN ALIAS=staging"),
        ({"alias": "prod"}, "unknown alias 'prod': choose one of candidate, staging, production"),
        ({"version": "v3"}, f"no version v3 in {registry.root}"),
        ({"version": "0"}, "not a registry version: 'v0' (expected v1, v2, ...)"),
        ({}, "name one registry alias or one version (ALIAS=production or VERSION=v3)"),
        ({"alias": "production", "version": "v1"}, "name one registry alias or one version"),
    ]  # fmt: skip
    for named, message in refused:
        with pytest.raises(RegistryError) as caught:
            resolve(registry, **named)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
