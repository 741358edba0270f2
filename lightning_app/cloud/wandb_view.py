"""The registry's view for people: each version as a W&B ``model`` artifact (the one W&B adapter).

The GCS registry (:mod:`lightning_app.cloud.registry`) is the record machines read; W&B is
where people look and click. :class:`WandbModelView` is the only code that calls W&B for the
registry: it resumes the training run found in the run directory (``<run>/wandb/*-run-*-<id>``)
so the artifact's lineage starts at that run, logs the version's files as a ``model``
artifact and links it into the registry collection ``WANDB_REGISTRY`` (default
``wandb-registry-model/brain-mri``) with the aliases ``candidate`` and ``vN``.

Linking into a registry needs W&B's online service, which cannot be reached here: the tests
of ``make register`` use a stand-in with the :class:`ModelView` interface, and offline
(``WANDB_MODE=offline``, the default without a key) this adapter only logs the artifact to the
local run and prints that the link waits for a sync.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from lightning_app.inference.artefacts import MODEL_NAME

COLLECTION = "wandb-registry-model/brain-mri"
_RUN_DIR = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)$")


class ModelView(Protocol):
    """Where a registered version is shown to people."""

    def log_version(
        self, version: str, files: dict[str, Path], metadata: dict[str, Any], run_dir: Path
    ) -> str:
        """Log ``files`` as version ``version``; return where it can be seen."""
        ...


def training_run_id(run_dir: Path) -> str | None:
    """The W&B id of the newest run under ``run_dir/wandb`` (``None``: the run had no W&B logger)."""
    found = sorted(p.name for p in (run_dir / "wandb").glob("*run-*") if _RUN_DIR.match(p.name))
    if not found:
        return None
    match = _RUN_DIR.match(found[-1])
    return match.group("id") if match else None


class WandbModelView:
    """The real W&B calls (online: the registry link; offline: the local artifact only)."""

    def __init__(self, project: str, collection: str = COLLECTION, mode: str = "offline") -> None:
        """W&B ``project`` of the training runs, the registry ``collection``, the W&B ``mode``."""
        self.project, self.collection, self.mode = project, collection, mode

    def log_version(
        self, version: str, files: dict[str, Path], metadata: dict[str, Any], run_dir: Path
    ) -> str:
        """Resume the training run, log the ``model`` artifact, link it (online)."""
        import wandb

        run_id = training_run_id(run_dir)
        run = wandb.init(
            project=self.project,
            id=run_id,
            resume="allow" if run_id else None,
            job_type=None if run_id else "register",
            dir=str(run_dir),
            mode=self.mode,  # type: ignore[arg-type]
        )
        try:
            artifact = wandb.Artifact(
                MODEL_NAME, type="model", metadata={"registry_version": version, **metadata}
            )
            for name, path in files.items():
                artifact.add_file(str(path), name=name)
            run.log_artifact(artifact, aliases=["candidate", version])
            if self.mode == "offline":
                return f"offline W&B run {run.id} (the link to {self.collection} waits for `wandb sync`)"
            run.link_artifact(artifact, self.collection, aliases=["candidate", version])
            return f"{self.collection}:{version}"
        finally:
            run.finish()
