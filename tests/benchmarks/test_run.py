"""Which benchmarks ``make bench`` runs (benchmarks/run.py), without running any."""

from __future__ import annotations

from benchmarks.run import ON_THEIR_OWN, modules, select


def test_make_bench_leaves_the_long_ones_to_their_own_targets():
    default = select([])
    assert "bench_predlog" in modules() and "bench_predlog" not in default
    assert set(default) == set(modules()) - ON_THEIR_OWN and "bench_data" in default


def test_a_named_benchmark_runs_even_when_left_out_of_the_default_set():
    assert select(["predlog"]) == ["bench_predlog"]
    assert select(["bench_data", "drift"]) == ["bench_data", "bench_drift"]
    assert select(["nosuch"]) == []
