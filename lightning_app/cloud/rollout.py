"""``make rollout VERSION=vN [DRY_RUN=1]``: a Cloud Run canary with automatic rollback.

    python -m lightning_app.cloud.rollout --version vN [--dry-run] [--probe-url URL]

The version must hold the ``staging`` or ``production`` alias (``make promote``). Then:

1. Cloud Build builds the serving image of the version's archive (``cloudbuild.serve.yaml``);
2. the new revision is deployed with ``--no-traffic --tag candidate``;
3. the tagged URL is probed (:func:`lightning_app.cloud.canary.probe`: the golden scans
   against the answers recorded at register time, then a short load: errors, p95);
4. traffic moves ``CANARY_STEPS`` (10 -> 50 -> 100 %), probing after each step; the first
   failed probe sends all traffic back to the revision that served before, and the command
   ends with one ``error:`` line, exit 1.

Every ``gcloud`` call goes through :class:`~lightning_app.cloud.cloud_run.CloudRun`. With
``DRY_RUN=1`` they are printed, and the probes go to ``--probe-url`` (``PROBE_URL``) or, by
default, to the version's archive served here on 127.0.0.1, so the decision is real.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path

from lightning_app.cloud.canary import Limits, Probe, probe
from lightning_app.cloud.cloud_run import CloudRun
from lightning_app.cloud.gates import serve_locally
from lightning_app.cloud.promote import fetch_version
from lightning_app.cloud.registry import Registry, RegistryError
from lightning_app.cloud.settings import CloudSettings, CloudSettingsError
from lightning_app.errors import UserError
from lightning_app.inference.artefacts import MODEL_NAME


def steps_of(raw: str) -> list[int]:
    """``"10,50,100"`` -> ``[10, 50, 100]``: rising percentages ending at 100."""
    try:
        steps = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        steps = []
    if not steps or steps[-1] != 100 or steps != sorted(set(steps)) or steps[0] <= 0:
        raise CloudSettingsError(f"CANARY_STEPS={raw!r}: rising percentages ending at 100, e.g. 10,50,100")
    return steps


def canary(
    cloud_run: CloudRun, image: str, steps: list[int], check: Callable[[str], Probe], limits: Limits
) -> list[str]:
    """Deploy ``image`` untrafficked, probe, shift ``steps``; roll back at the first failure.

    ``check(url)`` probes the candidate at its tagged URL. Returns the failed step's problems
    (empty: the candidate takes 100 %).
    """
    previous = cloud_run.serving_revision()
    cloud_run.deploy_candidate(image)
    url = cloud_run.candidate_url()
    for percent in (0, *steps):
        if percent:
            cloud_run.shift(percent)
        seen = check(url)
        problems = limits.problems(seen)
        print(
            f"canary at {percent:3d} %: {seen.summary()}{'  -> ' + '; '.join(problems) if problems else ''}"
        )
        if problems:
            cloud_run.rollback(previous)
            print(f"rolled back: all traffic to {previous}")
            return problems
    return []


def rollout(registry: Registry, version: str, settings: CloudSettings, probe_url: str) -> list[str]:
    """The whole rollout of ``version`` (see the module docstring); the problems that stopped it."""
    registry.record(version)  # a one-line error for a version that does not exist
    held = [a for a in registry.aliases_of(version) if a in ("staging", "production")]
    if not held:
        raise RegistryError(
            f"{version} is neither staging nor production: make promote VERSION={version} first"
        )
    limits = Limits.from_settings(settings)
    steps = steps_of(settings.get("CANARY_STEPS", "10,50,100"))
    image = settings.get("SERVE_IMAGE") or (
        f"{settings.region}-docker.pkg.dev/{settings.project}/{settings.repo}/serve:{version}"
    )
    cloud_run = CloudRun(settings, settings.get("SERVICE", "brain-mri-serve"))
    with tempfile.TemporaryDirectory(prefix="rollout-") as tmp, ExitStack() as stack:
        fetched = fetch_version(registry, version, Path(tmp))
        scans, expected = fetched.scans, fetched.record["golden"]
        commit = str(fetched.record.get("git_commit", ""))
        cloud_run.build_image(registry.uri(version, f"{MODEL_NAME}.mar"), image, commit)
        target = probe_url
        if settings.dry_run and not target:
            first = scans[sorted(scans)[0]]
            runtime = settings.get("GATE_RUNTIME", "torchserve")
            target = stack.enter_context(
                serve_locally(
                    fetched.mar, Path(tmp) / "serve", first, base_env=settings.extra, runtime=runtime
                )
            )
            print(f"dry run: probing {version}'s archive served at {target} in place of the tagged URL")

        def check(url: str) -> Probe:
            return probe(target or url, scans, expected, limits)

        return canary(cloud_run, image, steps, check, limits)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Parse, read the settings once, roll out; one-line errors (exit 1: rolled back, 2: refused)."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_app.cloud.rollout", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--version", required=True, help="registry version holding staging or production")
    parser.add_argument("--dry-run", action="store_true", help="print the gcloud commands; probe locally")
    parser.add_argument("--probe-url", default="", help="probe this server instead of the tagged URL")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    try:
        settings = CloudSettings.from_env(env, dry_run=args.dry_run)
        problems = rollout(Registry.from_settings(settings), args.version, settings, args.probe_url)
    except UserError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if problems:
        print(f"error: {args.version} rolled back: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print(f"{args.version} serves 100 % of the traffic")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
