"""The train image's entrypoint: the LightningCLI, plus Vertex AI's environment.

``python -m lightning_app.train_entry fit --config configs/default.yaml ...`` is
``python -m lightning_app`` with these additions when Vertex AI's variables are set
(see :mod:`lightning_app.cloud.cluster`):

* ``AIP_CHECKPOINT_DIR`` -> ``--trainer.default_root_dir`` (runs and checkpoints land there);
* ``CLUSTER_SPEC`` (or ``MASTER_ADDR``...) -> ``--trainer.num_nodes N`` and the
  :class:`~lightning_app.cloud.cluster.VertexEnvironment` plugin (DDP across replicas);
* ``WANDB_API_KEY_SECRET`` (a Secret Manager version name) -> ``WANDB_API_KEY`` in this
  process only, never written anywhere;
* after ``fit``, rank 0 writes the best checkpoint (``model.ckpt``), the exported model
  (``state_dict.pt``, ``index_to_name.json``, ``model_meta.json``), the TorchServe archive
  ``brain_mri.mar`` built from them, ``metrics.json`` and ``config.yaml`` to
  ``AIP_MODEL_DIR``, and the run's reports to ``AIP_TENSORBOARD_LOG_DIR``; with W&B
  online, the archive is logged as a model artifact (aliases ``latest`` and ``best``).
  ``make deploy-model MAR_URI=<AIP_MODEL_DIR>/brain_mri.mar`` serves exactly that file.

``gs://`` paths are read through the ``/gcs/`` Cloud Storage FUSE mount. Where there is
no such mount (the image run outside Vertex AI), the job writes to a local staging
directory and rank 0 uploads it to ``gs://`` at the end (:func:`lightning_app.cloud.gcs.upload_tree`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from lightning_app.cloud.cluster import GCS_MOUNT, VertexPaths, fetch_secret, fit_args, topology_from_env
from lightning_app.errors import UserError

REPORTS = ("metrics.json", "config.yaml", "confusion_matrix.png")


def publish(run_dir: Path, paths: VertexPaths, data_dir: Path | None = None) -> list[Path]:
    """Copy the best checkpoint, the exported model, its ``.mar`` and the reports to Vertex's dirs."""
    from lightning_app.export.build import archive, export
    from lightning_app.training.runs import NoCheckpointError, best_checkpoint

    written: list[Path] = []
    if paths.model_dir:
        model_dir = Path(paths.model_dir)
        try:
            best = best_checkpoint(run_dir)
        except NoCheckpointError as exc:
            raise UserError(f"{exc}: nothing to publish to AIP_MODEL_DIR") from None
        exported = export(best, model_dir, data_dir=data_dir)
        written += [exported.weights, exported.index_to_name, exported.meta, *exported.extra]
        written.append(archive(exported, model_dir))
        written.append(Path(shutil.copy2(best, model_dir / "model.ckpt")))
        written += [
            Path(shutil.copy2(run_dir / n, model_dir / n)) for n in REPORTS[:2] if (run_dir / n).is_file()
        ]
    if paths.log_dir:
        log_dir = Path(paths.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        written += [Path(shutil.copy2(run_dir / n, log_dir / n)) for n in REPORTS if (run_dir / n).is_file()]
    return written


def training_data(args: list[str]) -> Path | None:
    """The ``--data.data_dir`` given on the command line (export steps read its splits)."""
    from lightning_app.data import manifest

    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--data.data_dir=") else None
        if arg == "--data.data_dir" and i + 1 < len(args):
            value = args[i + 1]
        if value:
            path = Path(value)
            return path if manifest.has_manifest(path) else None
    return None


def log_model_artifact(written: list[Path], run_dir: Path) -> None:
    """Log the ``.mar`` and its metadata as the W&B model artifact ``brain_mri`` (``latest``, ``best``).

    Online: into the training run (or a new ``publish`` run). Offline: into the training
    run's local files, uploaded by ``wandb sync`` later. Disabled, or no run offline: nothing.
    """
    from lightning_app.inference.artefacts import META, MODEL_NAME
    from lightning_app.training.runinfo import wandb_mode

    mar = next((p for p in written if p.suffix == ".mar"), None)
    mode = wandb_mode(os.environ)
    if mar is None or mode == "disabled":
        return
    import wandb

    run = wandb.run
    if run is None and mode != "online":
        return
    run = run or wandb.init(project=os.environ.get("WANDB_PROJECT", "brain-mri"), job_type="publish")
    meta = mar.with_name(META)
    version = json.loads(meta.read_text()).get("version") if meta.is_file() else None
    artifact = wandb.Artifact(
        MODEL_NAME, type="model", metadata={"version": version, "run_dir": str(run_dir)}
    )
    artifact.add_file(str(mar))
    if meta.is_file():
        artifact.add_file(str(meta))
    run.log_artifact(artifact, aliases=["latest", "best"])
    print(f"logged:     W&B model artifact {MODEL_NAME}:best (version {version}, {mode})")
    run.finish()


def is_rank_zero(env: Mapping[str, str]) -> bool:
    """Node 0 and local rank 0: the one process that publishes."""
    topology = topology_from_env(env)
    return (topology is None or topology.node_rank == 0) and env.get("LOCAL_RANK", "0") == "0"


def staging_root(env: Mapping[str, str]) -> Path | None:
    """A local stand-in for ``/gcs`` when an ``AIP_*`` directory is ``gs://`` and no mount exists.

    ``GCS_FUSE_ROOT``, when set, names the mount to use as it is (no staging).
    """
    uses_gcs = any(env.get(k, "").startswith("gs://") for k in ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR"))
    if not uses_gcs or "GCS_FUSE_ROOT" in env or Path(GCS_MOUNT).is_dir():
        return None
    return Path(tempfile.mkdtemp(prefix="gcs-staging-"))


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> None:
    """Run the CLI with Vertex's mapping; user errors end with one line and exit code 2."""
    from lightning_app.cli import main as cli_main

    env = os.environ if env is None else env
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if env.get("WANDB_API_KEY_SECRET") and not env.get("WANDB_API_KEY"):
            os.environ["WANDB_API_KEY"] = fetch_secret(env["WANDB_API_KEY_SECRET"], env)
        staging = staging_root(env) if args[:1] == ["fit"] else None
        if staging is not None:
            env = {**env, "GCS_FUSE_ROOT": str(staging)}
        extra = fit_args(env) if args[:1] == ["fit"] else []
        paths = VertexPaths.from_env(env)
        run_dir = cli_main(args + extra)
        if extra and is_rank_zero(env) and paths.checkpoint_dir and run_dir is not None:
            written = publish(run_dir, paths, data_dir=training_data(args + extra))
            for path in written:
                print(f"published:  {path}")
            log_model_artifact(written, run_dir)
            if staging is not None:
                from lightning_app.cloud.gcs import upload_tree

                for uri in upload_tree(staging):
                    print(f"uploaded:   {uri}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
