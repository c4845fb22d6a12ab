"""Micro-batching: a batch of touchpoints becomes rounds, one batched model step each.

Round r holds the r-th touchpoint of every customer with more than r touchpoints in the batch, so each customer's
order is kept while one torch call serves many customers.
"""

from __future__ import annotations

from collections.abc import Sequence


def group_by_customer(customers: Sequence[str]) -> dict[str, list[int]]:
    """Positions of each customer's items, in arrival order; customers in order of first arrival.

    >>> group_by_customer(["a", "b", "a", "c", "a"])
    {'a': [0, 2, 4], 'b': [1], 'c': [3]}
    """
    groups: dict[str, list[int]] = {}
    for position, customer in enumerate(customers):
        groups.setdefault(customer, []).append(position)
    return groups


def rounds(groups: Sequence[Sequence[int]]) -> list[list[tuple[int, int]]]:
    """For per-customer position lists, the rounds as (customer index, position) pairs.

    >>> rounds([[0, 2, 4], [1], [3]])
    [[(0, 0), (1, 1), (2, 3)], [(0, 2)], [(0, 4)]]
    """
    # One pass over the positions: a round per depth that looks at every customer costs depth x customers, and a
    # heavy visitor with hundreds of touchpoints in a batch made that the engine's largest cost (profiled).
    out: list[list[tuple[int, int]]] = []
    for c, g in enumerate(groups):
        for r, position in enumerate(g):
            if r == len(out):
                out.append([])
            out[r].append((c, position))
    return out
