"""``make promote VERSION=vN ALIAS=staging|production``: the gates, then an atomic alias move.

    python -m lightning_app.cloud.promote --version vN --alias staging|production

1. reads where the alias points now, with its GCS generation;
2. fetches the version's archive, ``metrics.json`` and golden scans (sha256-checked);
3. runs the gates (:mod:`lightning_app.cloud.gates`): int8 parity, the quality floor, the
   OOD rates, then the golden set on the archive served for real on 127.0.0.1;
4. writes the alias only if its generation is still the one read in 1 (``ifGenerationMatch``):
   of two promotions racing for one alias, exactly one moves it; the other writes nothing.

``production`` takes only the version that ``staging`` names. A failed gate, a lost race or
any other refusal is one line on stderr and exit 1 (gates) or 2 (everything else).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_app.cloud import gates
from lightning_app.cloud.canary import Limits
from lightning_app.cloud.registry import Registry, RegistryError, check_alias, check_version
from lightning_app.cloud.settings import CloudSettings
from lightning_app.errors import UserError
from lightning_app.inference.artefacts import META, MODEL_NAME

PROMOTABLE = ("staging", "production")


@dataclass(frozen=True)
class Fetched:
    """A version fetched for the gates or a rollout, every file checked against its sha256."""

    mar: Path
    record: dict[str, Any]
    metrics: dict[str, Any]
    scans: dict[str, bytes]


def fetch_version(registry: Registry, version: str, folder: Path) -> Fetched:
    """The version's archive (a local path), record, ``metrics.json`` and golden scans."""
    record = registry.record(version)
    mar = registry.fetch(version, f"{MODEL_NAME}.mar", folder / f"{MODEL_NAME}.mar")
    metrics = json.loads(registry.fetch(version, "metrics.json", folder / "metrics.json").read_text())
    scans = {
        name.removeprefix("golden/"): registry.fetch(version, name, folder / name).read_bytes()
        for name in sorted(record["files"])
        if name.startswith("golden/")
    }
    return Fetched(mar, record, metrics, scans)


def run_gates(version: Fetched, settings: CloudSettings, workdir: Path) -> list[gates.Gate]:
    """Every gate on one fetched version; the golden set is served only when the others pass."""
    floors = gates.Floors.from_settings(settings)
    with zipfile.ZipFile(version.mar) as archive:
        meta = json.loads(archive.read(META))
    verdicts = [
        gates.parity_gate(meta),
        gates.quality_gate(version.metrics, floors),
        gates.ood_gate(meta, floors),
    ]
    if not all(g.ok for g in verdicts):
        return [*verdicts, gates.Gate("golden", False, "not run: an earlier gate failed")]
    runtime = settings.get("GATE_RUNTIME", "torchserve")
    first = version.scans[sorted(version.scans)[0]]
    with gates.serve_locally(
        version.mar, workdir / "serve", first, base_env=settings.extra, runtime=runtime
    ) as url:
        verdicts.append(gates.golden_gate(url, version.record, version.scans, Limits.from_settings(settings)))
    return verdicts


def promote(registry: Registry, version: str, alias: str, settings: CloudSettings) -> list[gates.Gate]:
    """Run the gates on ``version`` and, if all pass, move ``alias`` to it (conditionally)."""
    check_version(version)
    if check_alias(alias) not in PROMOTABLE:
        raise RegistryError(f"promote moves {' or '.join(PROMOTABLE)}; {alias} moves with make register")
    if alias == "production" and registry.alias("staging").version != version:
        raise RegistryError(
            f"{version} is not staging: promote it to staging first (production takes staging's version)"
        )
    expected = registry.alias(alias)  # read before the gates: a move while they run loses the race
    with tempfile.TemporaryDirectory(prefix="promote-") as tmp:
        verdicts = run_gates(fetch_version(registry, version, Path(tmp)), settings, Path(tmp))
    for gate in verdicts:
        print(f"gate {gate.name:8} {'pass' if gate.ok else 'FAIL'}  {gate.detail}")
    if gates.failed(verdicts):
        return verdicts
    registry.move_alias(
        alias, version, expected=expected, by="make promote", gates={g.name: g.detail for g in verdicts}
    )
    print(f"{alias} -> {version} (was {expected.version or 'unset'})")
    return verdicts


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Parse, read the settings once, promote; one-line errors."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.cloud.promote", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--version", required=True, help="registry version, e.g. v3")
    parser.add_argument("--alias", required=True, choices=PROMOTABLE)
    args = parser.parse_args(argv)
    try:
        settings = CloudSettings.from_env(os.environ if env is None else env, dry_run=False, bucket_only=True)
        verdicts = promote(Registry.from_settings(settings), args.version, args.alias, settings)
    except UserError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    refused = gates.failed(verdicts)
    if refused:
        print(f"error: {args.version} not promoted to {args.alias}: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
