"""``python -m lightning_app.monitor drift`` (``make drift LOGS=...``): the drift report.

Exit codes: 0 no drift (or too few predictions for a verdict), 1 drift detected, 2 the
command could not run (bad arguments, unreadable or malformed logs, no reference); errors
are one line on stderr. The verdict is also printed as one structured JSON line
(``event: drift_verdict``, severity ``ERROR`` on drift) for Cloud Logging: the drift alert
policy counts those lines.

The reference profile is that of a model registry version
(:func:`lightning_app.cloud.registry.resolve`, as deploys and the UI read it): the alias
``--alias`` (default ``production``) or ``--version vN``, in ``--registry`` (default: the
``REGISTRY``/``BUCKET`` of :class:`~lightning_app.cloud.settings.CloudSettings`); its archive
is fetched and checked against its recorded sha256. ``--reference`` takes a local ``.mar``,
export folder or profile instead, for offline analysis; a bare ``gs://`` archive is refused.
Every ``gs://`` read and write goes through :mod:`lightning_app.cloud.gcs`. The monitoring
deploy is :mod:`lightning_app.cloud.deploy_monitoring` (``make monitoring-deploy``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from lightning_app.cloud import gcs
from lightning_app.cloud.registry import MAR, Registry, resolve
from lightning_app.cloud.settings import CloudSettings
from lightning_app.errors import UserError
from lightning_app.inference.artefacts import REFERENCE_PROFILE
from lightning_app.monitor.drift import compare
from lightning_app.monitor.logs import LogError, read_logs
from lightning_app.monitor.report import write_report
from lightning_app.monitor.table import ProfileError, Table, load_profile

DEFAULT_ALIAS = "production"


def _read_bytes(source: str) -> bytes:
    if source.startswith("gs://"):
        raise ProfileError(
            f"{source}: a served model's reference is read through the registry (--alias or --version)"
        )
    path = Path(source)
    if path.is_dir():
        path = path / REFERENCE_PROFILE
    if not path.is_file():
        raise ProfileError(f"reference not found: {path} (a .mar, an export folder or {REFERENCE_PROFILE})")
    return path.read_bytes()


def load_reference(source: str, split: str) -> Table:
    """The reference table from a local ``.mar``, export folder or profile ``.npz``."""
    data = _read_bytes(source)
    if zipfile.is_zipfile(io.BytesIO(data)) and source.endswith(".mar"):
        with zipfile.ZipFile(io.BytesIO(data)) as mar:
            if REFERENCE_PROFILE not in mar.namelist():
                raise ProfileError(
                    f"{source} has no {REFERENCE_PROFILE}: re-export it with --data (make mar)"
                )
            data = mar.read(REFERENCE_PROFILE)
    return load_profile(io.BytesIO(data), split)


def expand(text: str, now: datetime) -> str:
    """Fill ``{today:%Y/%m/%d}`` and ``{yesterday:...}`` (UTC) in a path."""
    if "{" not in text:
        return text
    try:
        return text.format(today=now, yesterday=now - timedelta(days=1))
    except (KeyError, ValueError, IndexError):
        raise LogError(f"bad placeholder in {text!r}: use {{today:%Y/%m/%d}} or {{yesterday:...}}") from None


def registry_reference(args: argparse.Namespace, folder: Path, env: Mapping[str, str]) -> tuple[str, str]:
    """Fetch the reference archive that the registry names: (local path, what it is).

    Without ``--registry``, the registry is that of ``env``'s ``REGISTRY``/``BUCKET``
    (:class:`~lightning_app.cloud.settings.CloudSettings`, read only then).
    """
    if args.reference:
        if args.alias or args.version or args.registry:
            raise ProfileError("--reference is a local file: leave out --alias, --version and --registry")
        return args.reference, args.reference
    if args.registry:
        registry = Registry.at(args.registry)
    else:
        registry = Registry.from_settings(CloudSettings.from_env(env, dry_run=True, bucket_only=True))
    alias = args.alias or ("" if args.version else DEFAULT_ALIAS)
    target = resolve(registry, alias=alias, version=args.version)
    path = target.fetch_mar(folder / MAR)
    return str(path), f"registry {target.name}: {target.mar_uri}"


def parser() -> argparse.ArgumentParser:
    """Command-line arguments of ``drift``."""
    p = argparse.ArgumentParser(prog="python -m lightning_app.monitor", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("drift", help="compare a window of prediction logs with the reference profile")
    d.add_argument(
        "--logs",
        nargs="+",
        required=True,
        help="JSONL files, folders or gs:// paths ({today:%%Y/%%m/%%d} expands)",
    )
    d.add_argument("--alias", default="", help="registry alias whose model is the reference (production)")
    d.add_argument("--version", default="", help="registry version whose model is the reference")
    d.add_argument("--registry", default="", help="gs://.../registry/brain_mri (default: REGISTRY, BUCKET)")
    d.add_argument("--reference", default="", help="offline: a local .mar, export folder or profile .npz")
    d.add_argument("--split", default="val", help="reference split (val: held out from training)")
    d.add_argument("--alpha", type=float, default=0.05, help="false-alarm rate of the whole report")
    d.add_argument("--min-window", type=int, default=30, help="fewest predictions for a verdict")
    d.add_argument("--hours", type=float, help="only records of the last N hours")
    d.add_argument("--permutations", type=int, default=500, help="MMD permutation count")
    d.add_argument("--any-version", action="store_true", help="keep records of every model version")
    d.add_argument("--skip-malformed", action="store_true", help="count malformed lines instead of failing")
    d.add_argument("--out", default="reports/drift", help="report folder (local or gs://)")
    return p


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Read, compare, report (the registry's settings from ``env``); returns the exit code."""
    if not 0 < args.alpha < 1 or args.min_window < 1 or args.permutations < 19:
        raise LogError("need 0 < --alpha < 1, --min-window >= 1 and --permutations >= 19")
    now = datetime.now(UTC)
    args.logs = [expand(source, now) for source in args.logs]
    args.out = expand(str(args.out), now)
    with tempfile.TemporaryDirectory(prefix="drift-reference-") as tmp:
        path, source = registry_reference(args, Path(tmp), env)
        reference = load_reference(path, args.split)
    since = now - timedelta(hours=args.hours) if args.hours else None
    parsed = read_logs(args.logs, skip_malformed=args.skip_malformed, since=since)
    window = Table.from_records(parsed.records)
    version = str(reference.meta.get("model_version", ""))
    context: dict[str, Any] = {
        "logs": ", ".join(args.logs),
        "log files": parsed.files,
        "events": dict(parsed.events),
        "malformed lines skipped": len(parsed.malformed),
        "reference": source,
        "reference_split": args.split,
        "model version": version,
        "data version": reference.meta.get("data_version"),
    }
    if not args.any_version and version:
        same = window.columns["model_version"] == version
        context["other model versions dropped"] = int(np.sum(~same))
        window = window.select(same)
    verdict = compare(
        window, reference, alpha=args.alpha, min_window=args.min_window, permutations=args.permutations
    )
    out = str(args.out)
    if out.startswith("gs://"):
        with tempfile.TemporaryDirectory() as tmp:
            gcs.upload_files(write_report(Path(tmp), verdict, window, reference, context), out)
    else:
        write_report(Path(out), verdict, window, reference, context)
    failed = [t.name for t in verdict.tests if t.drift]
    line = {
        "severity": "ERROR" if verdict.drift else "INFO",
        "message": f"drift report: {verdict.status}" + (f" ({', '.join(failed)})" if failed else ""),
        "logging.googleapis.com/labels": {"component": "drift-report", "model_version": version},
        "event": "drift_verdict",
        "status": verdict.status,
        "drift": verdict.drift,
        "window": verdict.window,
        "failed_tests": failed,
        "report": out,
    }
    print(json.dumps(line), flush=True)
    return 1 if verdict.drift else 0


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point (``env``: default ``os.environ``, read here only): one-line errors, exit 2."""
    args = parser().parse_args(argv)
    try:
        return run(args, os.environ if env is None else env)
    except (LogError, ProfileError, UserError, OSError) as exc:
        print(f"error: {(str(exc) or type(exc).__name__).splitlines()[0]}", file=sys.stderr)
        return 2
