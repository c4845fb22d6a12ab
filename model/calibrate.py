"""Probability calibration: Platt scaling per head, fitted on held-out scores.

The heads are trained on touchpoint-time examples, while scores are used at arbitrary moments and on a
different mix of customers; a per-head sigmoid(a * logit + b) fitted on held-out scoring points corrects the
level without changing any ranking. With its intercept, the fit makes the mean probability equal the observed
rate on the data it was fitted on, which is what a call-budget planner needs from a probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_RIDGE = 1e-6  # keeps the Newton step defined when a head has no positives
_HESSIAN_ROWS = 1 << 18


@dataclass(frozen=True, slots=True)
class Calibration:
    scale: np.ndarray  # (P,) float32
    shift: np.ndarray  # (P,) float32

    @classmethod
    def identity(cls, n_heads: int) -> Calibration:
        return cls(scale=np.ones(n_heads, np.float32), shift=np.zeros(n_heads, np.float32))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """(n, P) logits -> (n, P) float32 probabilities."""
        return sigmoid(logits * self.scale + self.shift).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"scale": self.scale.tolist(), "shift": self.shift.tolist()}

    @classmethod
    def from_dict(cls, doc: dict[str, list[float]]) -> Calibration:
        return cls(scale=np.asarray(doc["scale"], np.float32), shift=np.asarray(doc["shift"], np.float32))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def logistic_fit(x: np.ndarray, y: np.ndarray, ridge: float = _RIDGE, iterations: int = 50,
                 sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Weights (F,) of logistic regression by Newton's method: x (n, F) carries its own intercept column;
    `sample_weight` (n,) weighs each row's loss (default: 1)."""
    sw = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = np.zeros(x.shape[1])
    penalty = ridge * np.eye(x.shape[1])
    for _ in range(iterations):
        p = sigmoid(x @ w)
        grad = x.T @ (sw * (p - y)) + penalty @ w
        curvature = sw * p * (1 - p)
        hess = penalty.copy()
        for rows in range(0, len(x), _HESSIAN_ROWS):  # in slices: a weighted copy of all of x would double memory
            part = x[rows:rows + _HESSIAN_ROWS]
            hess += (part * curvature[rows:rows + _HESSIAN_ROWS, None]).T @ part
        delta = np.linalg.solve(hess, grad)
        w -= delta
        if np.abs(delta).max() < 1e-9:
            break
    return w


def fit_standardised(x: np.ndarray, y: np.ndarray, ridge: float, sample_weight: np.ndarray | None = None
                     ) -> tuple[np.ndarray, float]:
    """Logistic regression of 0/1 labels y (n,) on the columns of x (n, F), its ridge on standardised columns
    (so one penalty suits features of any scale); returned as weights (F,) and an intercept on x as it is."""
    # Standardised in place in one float64 array with the intercept column: millions of points are gigabytes.
    z = np.empty((len(x), x.shape[1] + 1))
    z[:, :-1] = x
    z[:, -1] = 1.0
    features = z[:, :-1]
    mean = features.mean(axis=0)
    features -= mean
    std = np.sqrt(np.einsum("ij,ij->j", features, features) / len(z))  # ndarray.std would copy the array
    std[std == 0] = 1.0  # a constant column: its weight stays at zero
    features /= std
    w = logistic_fit(z, y.astype(np.float64), ridge=ridge, sample_weight=sample_weight)
    return w[:-1] / std, float(w[-1] - (w[:-1] * mean / std).sum())


def fit(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Per-head Platt scaling from held-out logits (n, P) and 0/1 labels (n, P); a head with one class only
    keeps its logits as they are."""
    scale, shift = np.ones(logits.shape[1], np.float32), np.zeros(logits.shape[1], np.float32)
    for p in range(logits.shape[1]):
        y = labels[:, p].astype(np.float64)
        if 0 < y.sum() < len(y):
            x = np.stack([logits[:, p].astype(np.float64), np.ones(len(y))], axis=1)  # (n, 2)
            scale[p], shift[p] = logistic_fit(x, y)
    return Calibration(scale=scale, shift=shift)
