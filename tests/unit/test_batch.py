"""Micro-batch rounds: every touchpoint once, each customer's in arrival order, one per customer per round."""

from hypothesis import given
from hypothesis import strategies as st

from streams.batch import group_by_customer, rounds


@given(st.lists(st.sampled_from("abcdefgh"), max_size=200))
def test_rounds_keep_each_customers_order_and_serve_every_touchpoint_once(customers):
    groups = list(group_by_customer(customers).values())
    out = rounds(groups)
    assert sorted(p for round_ in out for _, p in round_) == list(range(len(customers)))
    for r, round_ in enumerate(out):
        members = [c for c, _ in round_]
        assert members == sorted(set(members))  # one touchpoint per customer, customers in first-arrival order
        assert all(groups[c][r] == p for c, p in round_)  # the r-th touchpoint of each customer
        assert set(members) == {c for c, g in enumerate(groups) if len(g) > r}
