"""``monitor.drift.compare`` counts distinct scans: the reference's near-duplicate groups.

The reference is the val-split profile that the export step put in the session's ``.mar``
(real Br35H scans, group ids from the real split manifest); windows are records of real
held-out scans made by the handler's code (``monitor.simulate.records``).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks import simulate
from lightning_app.data import manifest
from lightning_app.inference.artefacts import REFERENCE_PROFILE
from lightning_app.monitor.cli import load_reference
from lightning_app.monitor.drift import compare, one_per_group
from lightning_app.monitor.table import GROUP, PROFILE_VERSION, ProfileError, Table, load_profile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(mar_file: Path) -> Table:
    return load_reference(str(mar_file), "val")


@pytest.fixture(scope="module")
def window(engine, held_out) -> Table:
    return Table.from_records(simulate.records(engine, held_out))


def rewrite_profile(mar_file: Path, path: Path, *, keep_groups: bool, meta: dict) -> Path:
    """The session's profile re-saved with or without group ids and with other meta entries."""
    with zipfile.ZipFile(mar_file) as mar, np.load(io.BytesIO(mar.read(REFERENCE_PROFILE))) as data:
        arrays = {
            k: data[k] for k in data.files if k != "meta" and (keep_groups or not k.endswith(f"/{GROUP}"))
        }
        old_meta = json.loads(str(data["meta"]))
    arrays["meta"] = np.asarray(
        json.dumps({k: v for k, v in old_meta.items() if k != "profile_version"} | meta)
    )
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


def test_the_profile_carries_the_manifest_groups(reference, small_br35h) -> None:
    rows = [r for r in manifest.read(small_br35h / manifest.MANIFEST_NAME) if r.split == "val"]
    assert reference.meta["profile_version"] == PROFILE_VERSION
    assert list(reference.columns[GROUP]) == [r.group for r in rows]
    assert reference.meta["groups"]["val"] == len({r.group for r in rows})
    distinct = one_per_group(reference)
    assert sorted(distinct.columns[GROUP]) == sorted({r.group for r in rows})


def test_one_scan_per_group_is_drawn_with_the_seed(reference) -> None:
    draws = [one_per_group(reference, seed) for seed in (0, 0, 1)]
    assert all(sorted(d.columns[GROUP]) == sorted(set(reference.columns[GROUP])) for d in draws)
    assert np.array_equal(draws[0].columns["intensity_mean"], draws[1].columns["intensity_mean"])


def ungrouped(table: Table) -> Table:
    return Table({k: v for k, v in table.columns.items() if k != GROUP}, table.embedding, table.meta)


def test_near_copies_in_the_reference_count_once(reference, window) -> None:
    copies = reference.select(np.repeat(np.arange(len(reference)), 5))  # every scan five times
    plain, copied = compare(window, reference), compare(window, copies)
    assert copied.reference == plain.reference == len(set(reference.columns[GROUP]))
    assert "near-duplicate groups: one per group" in copied.context["reference_scans"]
    # Without the group ids, copies pass for independent scans: same ECDFs, smaller p-values (the bug).
    rows, naive = compare(window, ungrouped(reference)), compare(window, ungrouped(copies))
    assert naive.reference == 5 * rows.reference == 5 * len(reference)
    ks_names = {"confidence", "intensity_mean", "intensity_std", "image_size"}

    def ks_p(verdict) -> list[float]:
        return [t.p_value for t in verdict.tests if t.name in ks_names and t.p_value is not None]

    assert len(ks_p(naive)) == len(ks_p(rows)) == len(ks_names)
    assert all(n <= r + 1e-12 for n, r in zip(ks_p(naive), ks_p(rows), strict=True))
    assert any(n < r for n, r in zip(ks_p(naive), ks_p(rows), strict=True))
    assert min(ks_p(copied)) >= min(ks_p(naive))


def test_a_version_1_profile_still_loads_and_says_what_it_lacks(tmp_path, mar_file, window) -> None:
    old = load_profile(rewrite_profile(mar_file, tmp_path / "v1.npz", keep_groups=False, meta={}), "val")
    assert old.meta["profile_version"] == 1 and GROUP not in old.columns
    verdict = compare(window, old)
    assert verdict.reference == len(old)
    assert "without (complete) group ids" in verdict.context["reference_scans"]
    assert "make mar" in verdict.context["reference_scans"]


def test_a_newer_profile_is_refused_with_one_line(tmp_path, mar_file) -> None:
    path = rewrite_profile(mar_file, tmp_path / "v99.npz", keep_groups=True, meta={"profile_version": 99})
    with pytest.raises(ProfileError, match="format version 99") as info:
        load_profile(path, "val")
    assert "\n" not in str(info.value)
