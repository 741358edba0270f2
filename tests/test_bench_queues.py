"""``make bench-queues``: why LitServe's queues stay ``Manager`` queues despite their cost."""

from __future__ import annotations

import pytest

from benchmarks import bench_queues


def test_a_killed_idle_consumer_locks_a_plain_queue_but_not_a_manager_queue() -> None:
    plain, managed = bench_queues.KINDS
    assert bench_queues.after_a_kill(plain, items=3, wait=2.0) == 0
    assert bench_queues.after_a_kill(managed, items=3, wait=5.0) >= 2  # one may go to the dead get


def test_the_table_has_both_queues_round_trip_and_kill_columns(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench_queues.main(["--n", "20", "--rounds", "1", "--items", "2", "--no-doc"])
    assert set(result) == set(bench_queues.KINDS)
    assert all(r["wall_us"] > 0 and r["cpu_us"] >= 0 for r in result.values())
    out = capsys.readouterr().out
    assert "| `Manager().Queue` |" in out and "python -m benchmarks.bench_queues --n 20" in out
