"""What the benchmark report records beside its figures."""

from bench.report import cpu_times, stolen_share


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
