"""Micro-batch plans: every touchpoint once, each customer's in arrival order, one per customer per round."""

from hypothesis import given
from hypothesis import strategies as st

from streams.batch import customer_index, plan


@given(st.lists(st.sampled_from("abcdefgh"), max_size=200))
def test_rounds_keep_each_customers_order_and_serve_every_touchpoint_once(items):
    customers, of = customer_index(items)
    assert [customers[c] for c in of] == items
    assert customers == list(dict.fromkeys(items))  # in order of first arrival
    p = plan(of, len(customers))
    positions = {c: [i for i, x in enumerate(items) if x == c] for c in customers}
    served = []
    for depth, (which, at) in enumerate(p.rounds()):
        members = p.rows[which].tolist()
        assert members == sorted(set(members))  # one touchpoint per customer, customers in first-arrival order
        assert members == [c for c, name in enumerate(customers) if len(positions[name]) > depth]
        assert [positions[customers[c]][depth] for c in members] == p.order[at].tolist()  # each one's depth-th
        served += p.order[at].tolist()
    assert sorted(served) == list(range(len(items)))
    assert p.last.tolist() == [positions[name][-1] for name in customers]
