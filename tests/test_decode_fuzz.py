"""Fuzzing the decoder: mutated real JPEG/PNG/TIFF/WebP bytes decode or raise the clear error.

Property-based (hypothesis), bounded to a few seconds: ``transforms.decode`` on any byte
sequence either returns a grayscale image within the pixel cap or raises
:class:`ImageDecodeError` (a user-readable message), nothing else, without a memory
blow-up. The long run is ``make bench-fuzz`` (atheris). The serving entry is fuzzed in
``tests/inference/test_service.py``.
"""

from __future__ import annotations

import resource

from hypothesis import HealthCheck, given, settings

from lightning_app.transforms import MAX_PIXELS, ImageDecodeError, decode
from tests.fuzz_seeds import mutated, seeds


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_every_seed_decodes() -> None:
    for name, data in seeds().items():
        image = decode(data, target_size=64)
        assert image.mode == "L" and min(image.size) >= 64, name


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_mutated_images_decode_or_raise_only_the_clear_error(data: bytes) -> None:
    before = rss_peak_mib()
    for target in (None, 64):
        try:
            image = decode(data, target_size=target)
        except ImageDecodeError as exc:
            message = str(exc)
            assert message and "\n" not in message and "Traceback" not in message
        else:
            assert image.mode == "L"
            assert image.size[0] * image.size[1] <= MAX_PIXELS
    assert rss_peak_mib() - before < 512, "one decode raised the peak RSS by over 512 MiB"
