"""Cloud Run for the canary: every ``gcloud`` call of ``make rollout`` goes through :class:`CloudRun`.

GCP cannot exist on this machine: with ``dry_run`` each command is printed (``+ gcloud ...``)
and answered with a placeholder, which is how the tests and ``DRY_RUN=1`` run it; without it
each is run and its stdout read, a failure being one line (:class:`CloudRunError`).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from lightning_app.cloud.settings import CloudSettings
from lightning_app.errors import UserError

TAG = "candidate"
REPO = Path(__file__).resolve().parents[2]


class CloudRunError(UserError):
    """A ``gcloud`` command that failed (one line for the user)."""


class CloudRun:
    """One Cloud Run service of ``settings.project`` in ``settings.region``."""

    def __init__(self, settings: CloudSettings, service: str) -> None:
        """``service``: the Cloud Run service whose traffic the canary shifts."""
        self.settings, self.service, self.dry_run = settings, service, settings.dry_run
        self.commands: list[list[str]] = []

    def gcloud(self, *args: str, placeholder: str = "", timeout_s: float = 1800) -> str:
        """Run (or print, in a dry run) ``gcloud ARGS --project P``; its stdout (or ``placeholder``)."""
        command = ["gcloud", *args, f"--project={self.settings.project}"]
        self.commands.append(command)
        if self.dry_run:
            print(f"+ {shlex.join(command)}")
            return placeholder
        if shutil.which("gcloud") is None:
            raise CloudRunError("gcloud not found: install the Google Cloud CLI, or pass DRY_RUN=1")
        try:
            done = subprocess.run(
                command, cwd=REPO, capture_output=True, text=True, check=False, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            raise CloudRunError(f"{shlex.join(command[:4])} gave no answer within {timeout_s:g} s") from None
        if done.returncode:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CloudRunError(f"{shlex.join(command[:4])} failed: {why}")
        return done.stdout

    def _run(self, *args: str, placeholder: str = "") -> str:
        return self.gcloud("run", *args, f"--region={self.settings.region}", placeholder=placeholder)

    def build_image(self, mar_uri: str, image: str, commit: str) -> None:
        """Cloud Build builds and pushes the serving image holding ``mar_uri`` (cloudbuild.serve.yaml)."""
        subs = f"_MAR_URI={mar_uri},_IMAGE={image},_GIT_COMMIT={commit}"
        self.gcloud("builds", "submit", "--config=cloudbuild.serve.yaml", f"--substitutions={subs}", ".")

    def describe(self) -> dict[str, Any]:
        """The service's description (``status.traffic``, revisions)."""
        placeholder = json.dumps(
            {"status": {"traffic": [
                {"revisionName": f"{self.service}-serving", "percent": 100},
                {"revisionName": f"{self.service}-{TAG}", "tag": TAG, "url": f"https://{TAG}---{self.service}.a.run.app"},
            ]}}
        )  # fmt: skip
        out = self._run("services", "describe", self.service, "--format=json", placeholder=placeholder)
        try:
            return dict(json.loads(out))
        except ValueError:
            raise CloudRunError(f"gcloud run services describe {self.service}: not JSON") from None

    def serving_revision(self) -> str:
        """The revision that takes the most traffic now (the one a rollback returns to)."""
        traffic = [t for t in self.describe().get("status", {}).get("traffic", []) if t.get("percent")]
        if not traffic:
            raise CloudRunError(
                f"service {self.service} serves no revision: deploy it once with make deploy-model"
            )
        return str(max(traffic, key=lambda t: t["percent"])["revisionName"])

    def deploy_candidate(self, image: str) -> None:
        """A new revision of ``image`` with no traffic, reachable at its ``candidate`` tag URL."""
        self._run(
            "deploy", self.service, f"--image={image}", "--no-traffic", f"--tag={TAG}", "--port=8080",
            "--set-env-vars=SERVE_HOST=0.0.0.0",
        )  # fmt: skip

    def candidate_url(self) -> str:
        """The URL of the revision tagged ``candidate``."""
        for entry in self.describe().get("status", {}).get("traffic", []):
            if entry.get("tag") == TAG and entry.get("url"):
                return str(entry["url"])
        raise CloudRunError(f"service {self.service} has no revision tagged {TAG}")

    def shift(self, percent: int) -> None:
        """Send ``percent`` % of the traffic to the ``candidate`` revision."""
        self._run("services", "update-traffic", self.service, f"--to-tags={TAG}={percent}")

    def rollback(self, revision: str) -> None:
        """All traffic back to ``revision``; the ``candidate`` tag removed."""
        self._run("services", "update-traffic", self.service, f"--to-revisions={revision}=100")
        self._run("services", "update-traffic", self.service, f"--remove-tags={TAG}")
