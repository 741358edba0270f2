"""The train image's entrypoint: the LightningCLI, plus Vertex AI's environment.

``python -m lightning_app.train_entry fit --config configs/default.yaml ...`` is
``python -m lightning_app`` with these additions when Vertex AI's variables are set
(see :mod:`lightning_app.cluster`):

* ``AIP_CHECKPOINT_DIR`` -> ``--trainer.default_root_dir`` (runs and checkpoints land there);
* ``CLUSTER_SPEC`` (or ``MASTER_ADDR``...) -> ``--trainer.num_nodes N`` and the
  :class:`~lightning_app.cluster.VertexEnvironment` plugin (DDP across replicas);
* ``WANDB_API_KEY_SECRET`` (a Secret Manager version name) -> ``WANDB_API_KEY`` in this
  process only, never written anywhere;
* after ``fit``, rank 0 writes the best checkpoint (``model.ckpt``), the exported model
  (``state_dict.pt``, ``index_to_name.json``, ``model_meta.json``), ``metrics.json`` and
  ``config.yaml`` to ``AIP_MODEL_DIR``, and the run's reports to ``AIP_TENSORBOARD_LOG_DIR``.

``gs://`` paths are read through the ``/gcs/`` Cloud Storage FUSE mount.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from lightning_app.cluster import VertexPaths, fetch_secret, fit_args, topology_from_env
from lightning_app.errors import UserError

REPORTS = ("metrics.json", "config.yaml", "confusion_matrix.png")


def newest_run(root: Path) -> Path | None:
    """Return the ``version_<N>`` directory with the highest N under ``root``."""
    runs = [p for p in root.glob("version_*") if p.name.split("_")[1].isdigit()]
    return max(runs, key=lambda p: int(p.name.split("_")[1]), default=None)


def publish(run_dir: Path, paths: VertexPaths) -> list[Path]:
    """Copy the best checkpoint, the exported model and the reports to Vertex's dirs."""
    from lightning_app.export import export

    written: list[Path] = []
    if paths.model_dir:
        model_dir = Path(paths.model_dir)
        best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not best:
            raise UserError(f"no best-*.ckpt in {run_dir}/checkpoints: nothing to publish to AIP_MODEL_DIR")
        exported = export(best[-1], model_dir)
        written += [exported.weights, exported.index_to_name, exported.meta]
        written.append(Path(shutil.copy2(best[-1], model_dir / "model.ckpt")))
        written += [
            Path(shutil.copy2(run_dir / n, model_dir / n)) for n in REPORTS[:2] if (run_dir / n).is_file()
        ]
    if paths.log_dir:
        log_dir = Path(paths.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        written += [Path(shutil.copy2(run_dir / n, log_dir / n)) for n in REPORTS if (run_dir / n).is_file()]
    return written


def is_rank_zero(env: Mapping[str, str]) -> bool:
    """Node 0 and local rank 0: the one process that publishes."""
    topology = topology_from_env(env)
    return (topology is None or topology.node_rank == 0) and env.get("LOCAL_RANK", "0") == "0"


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> None:
    """Run the CLI with Vertex's mapping; user errors end with one line and exit code 2."""
    from lightning_app.cli import main as cli_main

    env = os.environ if env is None else env
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if env.get("WANDB_API_KEY_SECRET") and not env.get("WANDB_API_KEY"):
            os.environ["WANDB_API_KEY"] = fetch_secret(env["WANDB_API_KEY_SECRET"], env)
        extra = fit_args(env) if args[:1] == ["fit"] else []
        paths = VertexPaths.from_env(env)
        cli_main(args + extra)
        if extra and is_rank_zero(env) and paths.checkpoint_dir:
            run_dir = newest_run(Path(paths.checkpoint_dir))
            if run_dir is not None:
                for path in publish(run_dir, paths):
                    print(f"published:  {path}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
