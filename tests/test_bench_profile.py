"""``make profile`` (benchmarks/bench_profile.py) on real Br35H scans, with a tiny N.

Two training steps of the smoke config and two handler batches: the chrome traces are
valid JSON holding the profiled ops, and the top-ops table names real ops.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_profile
from tests.conftest import REPO


@pytest.mark.slow
def test_profile_writes_traces_and_a_top_ops_table(
    small_br35h: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile"
    bench_profile.main(
        [
            "--config", str(REPO / "configs/smoke.yaml"), "--data", str(small_br35h),
            "--steps", "2", "--warmup", "1", "--batch", "4", "--rounds", "2", "--threads", "1",
            "--out", str(out), "--no-doc",
        ]
    )  # fmt: skip
    for part, op in (("train", "aten::convolution_backward"), ("serve", "aten::convolution")):
        trace = json.loads((out / f"{part}_trace.json").read_text())
        names = {e.get("name") for e in trace["traceEvents"]}
        assert op in names, part
    ops = json.loads((out / "top_ops.json").read_text())
    for part in ("train", "serve"):
        rows = ops[part]
        assert len(rows) == bench_profile.ROWS
        assert all(r["op"] and r["calls"] >= 1 and r["self_ms"] >= 0 for r in rows)
        assert [r["self_ms"] for r in rows] == sorted((r["self_ms"] for r in rows), reverse=True)
    printed = capsys.readouterr().out
    assert "| op | calls | self CPU ms |" in printed
    assert f"`{ops['train'][0]['op']}`" in printed and f"`{ops['serve'][0]['op']}`" in printed
    assert "--steps 2" in printed  # the command that reproduces the table


def test_a_missing_mar_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"error: \.mar not found"):
        bench_profile.main(["--mar", str(tmp_path / "nope.mar"), "--no-doc"])
