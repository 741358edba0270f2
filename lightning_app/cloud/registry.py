"""The model registry on Cloud Storage: versions and lifecycle aliases (no torch).

Layout under ``gs://$BUCKET/registry/brain_mri/`` (:meth:`Registry.from_settings`)::

    v1/record.json        what the version is: files + sha256, metrics, data version, commit,
                          the golden scans' answers recorded at register time
    v1/brain_mri.mar, v1/metrics.json, v1/model_card.md, v1/golden/<scan>
    aliases/candidate.json   {"version": "v1", "previous": null, ...}
    aliases/staging.json, aliases/production.json

Versions are claimed, never overwritten: ``vN/record.json`` is created with
``ifGenerationMatch=0``, so two registrations never get the same number. An alias moves only
by a write conditioned on the generation its mover read (:meth:`Registry.move_alias`): of two
promotions racing for one alias, one wins and the other gets :class:`AliasRaceError`.
Deploys, the drift job and the UI read this registry, never a bare archive URI, and all
three name what they read the same way, through :func:`resolve`: an alias (``production``)
or a version (``v3``, or ``3``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lightning_app.cloud import gcs
from lightning_app.cloud.settings import CloudSettings
from lightning_app.data.atomic import file_digest
from lightning_app.errors import UserError
from lightning_app.inference.artefacts import MODEL_NAME

ALIASES = ("candidate", "staging", "production")
RECORD = "record.json"
MAR = f"{MODEL_NAME}.mar"
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


class RegistryError(UserError):
    """A registry request that cannot be served (one line for the user)."""


class AliasRaceError(RegistryError):
    """Another promotion moved the alias between this one's read and its write."""


def check_version(version: str) -> str:
    """``version`` if it reads ``vN`` (N >= 1), else a one-line error."""
    if not _VERSION.match(version):
        raise RegistryError(f"not a registry version: {version!r} (expected v1, v2, ...)")
    return version


def check_alias(alias: str) -> str:
    """``alias`` if it is one of :data:`ALIASES`, else a one-line error."""
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}: choose one of {', '.join(ALIASES)}")
    return alias


@dataclass(frozen=True)
class Alias:
    """Where an alias points (``version`` ``None``: not set yet) and the generation read."""

    name: str
    version: str | None
    generation: int
    previous: str | None = None


@dataclass
class Registry:
    """One model's registry under ``root`` (``gs://bucket/registry/<model>``)."""

    root: str
    fs: Any = None

    @classmethod
    def from_settings(cls, settings: CloudSettings, fs: Any = None) -> Registry:
        """``REGISTRY`` if set, else ``${BUCKET}/registry/brain_mri``."""
        bucket = settings.bucket if settings.bucket.startswith("gs://") else f"gs://{settings.bucket}"
        return cls.at(settings.get("REGISTRY") or f"{bucket}/registry/{MODEL_NAME}", fs)

    @classmethod
    def at(cls, root: str, fs: Any = None) -> Registry:
        """The registry under ``root`` (a ``gs://`` URI; anything else is a one-line error)."""
        gcs.split_uri(root)
        return cls(root.rstrip("/"), fs)

    def uri(self, version: str, name: str = "") -> str:
        """``<root>/<version>/<name>``."""
        return f"{self.root}/{check_version(version)}/{name}".rstrip("/")

    def versions(self) -> list[str]:
        """Every claimed version, oldest first."""
        found = set()
        for uri in gcs.list_objects(self.root + "/", self.fs):
            parts = uri[len(self.root) + 1 :].split("/")
            if len(parts) == 2 and parts[1] == RECORD and _VERSION.match(parts[0]):
                found.add(parts[0])
        return sorted(found, key=lambda v: int(v[1:]))

    def publish(self, files: dict[str, Path], record: dict[str, Any]) -> str:
        """Claim the next version for ``record``, then upload ``files`` (name -> local path).

        ``record`` gains ``version``, ``registered_at`` and ``files`` (name -> sha256); the
        claim is a create-only write, so a concurrent registration takes the next number.
        """
        record = {**record, "files": {name: file_digest(path) for name, path in files.items()}}
        taken = self.versions()
        number = int(taken[-1][1:]) + 1 if taken else 1
        for attempt in range(number, number + 20):
            version = f"v{attempt}"
            body = {**record, "version": version, "registered_at": _now()}
            try:
                gcs.write_bytes(self.uri(version, RECORD), _dump(body), if_generation_match=0, fs=self.fs)
            except gcs.PreconditionFailedError:
                continue
            for name, path in files.items():
                gcs.write_bytes(self.uri(version, name), path.read_bytes(), fs=self.fs)
            return version
        raise RegistryError(f"could not claim a version under {self.root}: too many concurrent registrations")

    def record(self, version: str) -> dict[str, Any]:
        """A version's ``record.json``; a one-line error if it does not exist."""
        try:
            return dict(json.loads(gcs.read_bytes(self.uri(version, RECORD), self.fs)))
        except gcs.StorageError:
            raise RegistryError(f"no version {version} in {self.root}") from None

    def fetch(self, version: str, name: str, dest: Path) -> Path:
        """Download a version's file to ``dest`` and check it against the recorded sha256."""
        expected = self.record(version)["files"].get(name)
        if expected is None:
            raise RegistryError(f"version {version} has no file {name!r}")
        gcs.fetch(self.uri(version, name), dest, self.fs)
        if file_digest(dest) != expected:
            dest.unlink()
            raise RegistryError(f"{self.uri(version, name)} does not match its recorded sha256")
        return dest

    def alias(self, name: str) -> Alias:
        """Where alias ``name`` points now, with the generation to condition a move on."""
        uri = f"{self.root}/aliases/{check_alias(name)}.json"
        generation = gcs.generation(uri, self.fs)
        if not generation:
            return Alias(name, None, 0)
        body = json.loads(gcs.read_bytes(uri, self.fs))
        return Alias(name, body["version"], generation, body.get("previous"))

    def move_alias(self, name: str, version: str, *, expected: Alias, **details: Any) -> Alias:
        """Point ``name`` at ``version`` iff it is as ``expected`` read it; else :class:`AliasRaceError`."""
        self.record(version)  # only a claimed version
        uri = f"{self.root}/aliases/{check_alias(name)}.json"
        body = {"version": version, "previous": expected.version, "moved_at": _now(), **details}
        try:
            generation = gcs.write_bytes(
                uri, _dump(body), if_generation_match=expected.generation, fs=self.fs
            )
        except gcs.PreconditionFailedError:
            now = self.alias(name)
            raise AliasRaceError(
                f"alias {name} moved to {now.version} while this promotion ran: nothing written, run it again"
            ) from None
        return Alias(name, version, generation, expected.version)

    def aliases_of(self, version: str) -> list[str]:
        """The aliases that point at ``version`` now."""
        return [name for name in ALIASES if self.alias(name).version == version]


@dataclass(frozen=True)
class Resolved:
    """A registry version named by an alias or a number: its record and where its files are."""

    registry: Registry
    version: str
    alias: str | None
    record: dict[str, Any]

    @property
    def name(self) -> str:
        """``v3 (production)``, or ``v3`` when named by its number."""
        return f"{self.version} ({self.alias})" if self.alias else self.version

    @property
    def mar_uri(self) -> str:
        """The version's archive in the registry."""
        return self.registry.uri(self.version, MAR)

    def fetch_mar(self, dest: Path) -> Path:
        """Download the version's archive to ``dest``, checked against its recorded sha256."""
        return self.registry.fetch(self.version, MAR, dest)


def resolve(registry: Registry, *, alias: str = "", version: str = "") -> Resolved:
    """The one way to read which version an alias or a version number names.

    Exactly one of ``alias`` and ``version`` (``v3`` or ``3``); an unknown alias, an alias
    that points nowhere yet and a version that does not exist are one-line errors.
    """
    if bool(alias) == bool(version):
        raise RegistryError("name one registry alias or one version (ALIAS=production or VERSION=v3)")
    if alias:
        pointed = registry.alias(check_alias(alias)).version
        if pointed is None:
            raise RegistryError(
                f"alias {alias} points at no version in {registry.root} yet: "
                f"make promote VERSION=vN ALIAS={alias}"
            )
        version = pointed
    version = f"v{version}" if version.isdigit() else version
    return Resolved(registry, check_version(version), alias or None, registry.record(version))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _dump(body: dict[str, Any]) -> bytes:
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
