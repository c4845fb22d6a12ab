"""The hypervisor's share of the cores, recorded beside the benchmark's figures, and latency by second."""

import time

import numpy as np

from bench.steal import QUIET, StealSeconds, cpu_times, per_second, plot, quiet, stolen_share


def test_the_hypervisors_share_is_its_ticks_over_all_ticks_between_two_samples():
    assert stolen_share((10, 1_000), (310, 2_000)) == 0.3
    assert stolen_share((10, 1_000), (10, 1_000)) is None  # no time passed: unknown, not 0%


def test_the_machines_cpu_times_count_steal_within_all_and_only_grow():
    before = cpu_times()
    sum(range(2_000_000))
    after = cpu_times()
    assert 0 <= before[0] <= before[1] and before[0] <= after[0] and before[1] <= after[1]
    share = stolen_share(before, after)
    assert share is None or 0.0 <= share <= 1.0


def test_the_sampler_records_a_share_for_each_second_it_ran():
    with StealSeconds() as steal:
        time.sleep(2.2)
    now = int(time.time())
    assert len(steal.shares) >= 1
    assert all(now - 4 <= second < now and 0.0 <= share <= 1.0 for second, share in steal.shares.items())


# Triggers in seconds 100 (quiet) and 101 (the hypervisor took 40%) and 102 (no share recorded).
SAMPLES = np.array([(100_000, 20), (100_400, 40), (100_900, 60), (101_100, 900), (101_500, 1100), (102_000, 5)],
                   dtype=np.float64)
SHARES = {100: 0.01, 101: 0.4, 99: 0.0}


def test_latency_by_second_bins_samples_by_their_triggers_second_beside_its_steal():
    assert per_second(SAMPLES, SHARES) == [[0, 3, 40.0, 59.6, 0.01], [1, 2, 1000.0, 1098.0, 0.4]]
    assert per_second(np.zeros((0, 2)), SHARES) == []


def test_quiet_percentiles_keep_only_the_samples_of_seconds_under_the_bound():
    calm = quiet(SAMPLES, SHARES)
    assert SHARES[100] < QUIET <= SHARES[101]
    assert (calm["seconds"], calm["of_seconds"], calm["actions"]) == (1, 2, 3)
    assert (calm["p50"], calm["p99"]) == (40.0, 59.6)
    assert quiet(SAMPLES, {101: 0.5})["actions"] == 0


def test_the_plot_is_written(tmp_path):
    plot(per_second(SAMPLES, SHARES), tmp_path / "latency.png", "test")
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
