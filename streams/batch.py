"""Micro-batching: a batch's touchpoints laid out customer by customer, so that one batched model call steps them
all, then taken in rounds, so that the policy sees each customer's touchpoints one at a time and in order.

Round r holds the r-th touchpoint of every customer with more than r touchpoints in the batch. Everything here is
index arithmetic over whole arrays: per-touchpoint Python lists of positions cost more than the model's step
(profiled, issue 8).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


def customer_index(customers: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct customers in order of first arrival, and the index among them of each item's customer.

    >>> customer_index(["a", "b", "a", "c", "a"])
    (['a', 'b', 'c'], array([0, 1, 0, 2, 0]))
    """
    index: dict[str, int] = {}
    of = np.fromiter((index.setdefault(c, len(index)) for c in customers), dtype=np.int64, count=len(customers))
    return list(index), of


@dataclass(frozen=True, slots=True)
class Plan:
    """Items grouped by customer: `order` lists the items' positions customer after customer (in order of the
    customer index), each customer's in arrival order; customer `rows[i]` has `lengths[i]` of them from
    `starts[i]` in `order`."""

    order: np.ndarray
    rows: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray

    @property
    def last(self) -> np.ndarray:
        """The position of each customer's last item."""
        return self.order[self.starts + self.lengths - 1]

    def rounds(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per round: which of `rows` take part (indices into it, in order) and where their item is in `order`.

        >>> [(w.tolist(), at.tolist()) for w, at in plan(np.array([0, 1, 0, 2, 0]), 3).rounds()]
        [([0, 1, 2], [0, 3, 4]), ([0], [1]), ([0], [2])]
        """
        which = np.arange(len(self.rows))
        depth = 0
        while len(which):
            yield which, self.starts[which] + depth
            depth += 1
            which = which[self.lengths[which] > depth]


def plan(customer_of: np.ndarray, customers: int) -> Plan:
    """The plan of items whose customers (indices below `customers`) are `customer_of`.

    >>> p = plan(np.array([0, 1, 0, 2, 0]), 4)
    >>> p.order.tolist(), p.rows.tolist(), p.lengths.tolist(), p.last.tolist()
    ([0, 2, 4, 1, 3], [0, 1, 2], [3, 1, 1], [4, 1, 3])
    """
    order = np.argsort(customer_of, kind="stable")
    counts = np.bincount(customer_of, minlength=customers)
    rows = np.flatnonzero(counts)
    lengths = counts[rows]
    return Plan(order, rows, lengths, np.cumsum(lengths) - lengths)
