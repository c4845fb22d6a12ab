"""The heads' output weights refitted on daily scoring points before the split, with everything under them frozen.

Training weighs every moment of the training period alike; a daily call list scores customers at midnight and
ranks the customers of the weeks just past, and the logistic-regression baseline is fitted on exactly those
points. Each head's output is an affine function of the MLP's hidden units and the context
(`Network.head_features`), so refitting it is a logistic regression: convex, one Newton solve per head, and the
artifact keeps its format and its worker cost. Its points are the daily ones of the last weeks before the split
and, weighted as in training, the moments right after each touchpoint of those weeks, where the worker scores:
on RetailRocket's June inner split (docs/model.md, seed 0) daily points alone moved the top 5%'s orders from
1,801 to 1,853 but cut the AUC at touchpoints from 0.908 to 0.902; with the touchpoints, 1,837 and 0.909.
"""

from __future__ import annotations

import numpy as np

from model import offline
from model.calibrate import fit_standardised
from model.data import EventTable, ScoringPoints
from model.network import Network

RIDGE = 1.0  # on standardised features, as the baseline's regression
MAX_POINTS = 3_000_000  # drawn at random beyond this: the features are 8 bytes x ~80 columns a point
MIN_POSITIVES = 100  # below this a head's ~80 weights would fit noise, so it keeps its trained ones


def refit_heads(net: Network, table: EventTable, points: ScoringPoints, weight: np.ndarray,
                rng: np.random.Generator) -> list[int]:
    """Refit the output of each head with enough positives among `points` (customers of `table`, labels
    observed before the split), each point's loss weighted by `weight` (n,); returns the heads refitted."""
    if len(points.customer) > MAX_POINTS:
        keep = np.sort(rng.choice(len(points.customer), MAX_POINTS, replace=False))
        points, weight = points.take(keep), weight[keep]
    width = net.config.head_hidden + net.config.context_size
    x = offline.heads_at(net, table, points.last_row, points.time_ms, net.head_features, width,
                         progress="refitting heads")
    refitted = []
    for head in range(net.config.n_heads):
        y = points.labels[:, head]
        if MIN_POSITIVES <= y.sum() < len(y):
            weights, bias = fit_standardised(x, y, RIDGE, sample_weight=weight)
            net.set_head_output(head, weights, bias)
            refitted.append(head)
    return refitted
