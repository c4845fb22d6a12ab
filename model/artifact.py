"""The versioned model artifact: one file the streaming worker loads, and the serving path over it.

The file is a `torch.save` of plain data (weights, ModelConfig, vocabulary, calibration, validation metrics,
training parameters, format version, and how the training run went), loaded with `weights_only=True` so that opening it runs no code. Its
version is a short SHA-256 of that content, recomputed on load, so a truncated or edited file is refused and
two runs with the same data and seed produce the same version.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import encode
from model.calibrate import Calibration
from model.network import ModelConfig, Network
from model.vocab import Vocabulary
from streams.contract import Touchpoint
from streams.errors import LamError

FORMAT_VERSION = 3  # 2: heads read `encode.context` (times, counts per event type); 3: faded counts, a linear path


def _digest(content: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    meta = {k: v for k, v in content.items() if k not in ("weights", "run")}
    h.update(json.dumps(meta, sort_keys=True, allow_nan=True).encode())
    for name, tensor in sorted(content["weights"].items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save(path: str | Path, net: Network, vocab: Vocabulary, calibration: Calibration,
         metrics: Mapping[str, Any], training: Mapping[str, Any], run: Mapping[str, Any] | None = None) -> str:
    """Write the artifact atomically (temp file, then rename) and return its version. `run` (wall time, peak
    memory) is stored but left out of the version, so the same data and seed give the same version."""
    content = {
        "format": FORMAT_VERSION,
        "config": net.config.to_dict(),
        "vocab": vocab.to_dict(),
        "calibration": calibration.to_dict(),
        "metrics": dict(metrics),
        "training": dict(training),
        "weights": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "run": dict(run or {}),
    }
    version = _digest(content)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**content, "version": version}, tmp)
    os.replace(tmp, path)
    return version


class LoadedModel:
    """A trained model ready to serve: encode, step and score batches of customers."""

    def __init__(self, content: Mapping[str, Any]) -> None:
        self.version: str = content["version"]
        self.vocab = Vocabulary.from_dict(content["vocab"])
        self.config = ModelConfig(**content["config"])
        self.calibration = Calibration.from_dict(content["calibration"])
        self.metrics: dict[str, Any] = dict(content["metrics"])
        self.training: dict[str, Any] = dict(content["training"])
        self.run: dict[str, Any] = dict(content["run"])
        self.net = Network(self.config)
        self.net.load_state_dict(content["weights"])
        self.net.eval()
        self.hidden_size: int = self.config.hidden_size
        self.products: tuple[str, ...] = self.vocab.heads

    def initial_state(self, n: int) -> np.ndarray:
        """(n, H) float32 state of customers with no touchpoints yet."""
        return np.zeros((n, self.hidden_size), dtype=np.float32)

    def _probabilities(self, states: torch.Tensor, counts: np.ndarray, since_first_ms: np.ndarray,
                       since_last_ms: np.ndarray) -> np.ndarray:
        # states (B, H) -> calibrated (B, P)
        context = torch.from_numpy(encode.context(since_last_ms, since_first_ms, counts))
        return self.calibration.apply(self.net.conversion_logits(states, context).numpy())

    def step(self, h: np.ndarray, counts: np.ndarray, events: Sequence[Touchpoint], prev_event_time_ms: np.ndarray,
             first_event_time_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance each row's state (B, H) and counts per event type (B, E) by its touchpoint; the customer's
        previous and first touchpoint times (B,) int64 are 0 when this one is the first. Returns new states
        (B, H) float32, new counts (B, E) and calibrated conversion probabilities (B, P) at the event's time."""
        return self.step_sequences(h, counts, events, np.ones(len(events), dtype=np.int64), prev_event_time_ms,
                                   first_event_time_ms)

    def step_sequences(self, h: np.ndarray, counts: np.ndarray, events: Sequence[Touchpoint], lengths: np.ndarray,
                       prev_event_time_ms: np.ndarray, first_event_time_ms: np.ndarray,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`step` each row through its touchpoints in order: row i's are the next `lengths[i]` (at least one) of
        `events`. One GRU call per group of rows of similar length rather than one call per touchpoint. Returns
        the state (N, H), counts (N, E) and probabilities (N, P) after every touchpoint, in the order of `events`."""
        starts = np.cumsum(lengths) - lengths
        row = np.repeat(np.arange(len(lengths)), lengths)
        times = np.fromiter((e.event_time_ms for e in events), dtype=np.int64, count=len(events))
        prev = np.roll(times, 1)
        prev[starts] = prev_event_time_ms
        cats, nums = encode.encode(events, times, prev, self.vocab)
        running = np.cumsum(encode.type_counts(cats[:, 0], self.config.n_event_types), axis=0)
        before = np.where(starts[:, None] > 0, running[starts - 1], 0)  # each row's share of the cumsum excluded
        counts = counts[row] + running - before[row]
        first = np.where(first_event_time_ms == 0, times[starts], first_event_time_ms)[row]
        states = np.empty((len(events), self.hidden_size), dtype=np.float32)
        h = np.ascontiguousarray(h, dtype=np.float32)
        with torch.inference_mode():
            # Rows grouped by length up to the next power of two: a few calls, and padding under 2x. Padding
            # follows a row's last touchpoint, so it changes none of the states kept.
            buckets = np.ceil(np.log2(lengths)).astype(np.int64)
            for bucket in np.unique(buckets):
                rows = np.flatnonzero(buckets == bucket)
                steps = np.arange(lengths[rows].max())
                valid = steps[None, :] < lengths[rows, None]
                where = np.where(valid, starts[rows, None] + steps[None, :], 0)
                out = self.net(torch.from_numpy(cats[where]), torch.from_numpy(nums[where]),
                               torch.from_numpy(h[rows]))  # (G, T, H)
                states[where[valid]] = out.numpy()[valid]
            probs = self._probabilities(torch.from_numpy(states), counts, times - first, np.zeros(len(events)))
        return states, counts, probs

    def score(self, h: np.ndarray, counts: np.ndarray, since_first_ms: np.ndarray,
              since_last_ms: np.ndarray | None = None) -> np.ndarray:
        """(B, P) calibrated probabilities from stored states (B, H) and counts (B, E), scored `since_last_ms`
        (B,) after each customer's last touchpoint (default: at that touchpoint) and `since_first_ms` after
        the first."""
        since_last_ms = np.zeros(len(h)) if since_last_ms is None else since_last_ms
        with torch.inference_mode():
            return self._probabilities(torch.from_numpy(np.ascontiguousarray(h, dtype=np.float32)), counts,
                                       since_first_ms, since_last_ms)

    def initial_probabilities(self) -> np.ndarray:
        """(P,) the probabilities of a customer with no touchpoints yet."""
        return self.score(self.initial_state(1), np.zeros((1, self.config.n_event_types)), np.zeros(1))[0]

    def sequence(self, events: Sequence[Touchpoint]) -> tuple[np.ndarray, np.ndarray]:
        """The offline path over one customer's touchpoints in order: states (T, H) and probabilities (T, P)."""
        if not events:
            return np.zeros((0, self.hidden_size), np.float32), np.zeros((0, len(self.products)), np.float32)
        times = np.array([e.event_time_ms for e in events], dtype=np.int64)
        prev = np.concatenate([[0], times[:-1]])
        cats, nums = encode.encode(events, times, prev, self.vocab)
        counts = np.cumsum(encode.type_counts(cats[:, 0], self.config.n_event_types), axis=0)
        with torch.inference_mode():
            states = self.net(torch.from_numpy(cats)[None], torch.from_numpy(nums)[None])[0]  # (T, H)
            return states.numpy().copy(), self._probabilities(states, counts, times - times[0], np.zeros(len(events)))


def load(path: str | Path) -> LoadedModel:
    """Open an artifact; a missing, corrupt or unknown-format file is a one-line LamError."""
    path = Path(path)
    if not path.is_file():
        raise LamError(f"model artifact {path}: not found (train one with `lam train`)")
    try:
        content = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise LamError(f"model artifact {path}: unreadable ({type(exc).__name__})") from None
    if not isinstance(content, dict) or "format" not in content:
        raise LamError(f"model artifact {path}: not a LAM model artifact")
    if content["format"] != FORMAT_VERSION:
        raise LamError(f"model artifact {path}: format version {content['format']!r}, this build reads "
                       f"{FORMAT_VERSION}: retrain it with `lam train` (or delete it and `lam demo` trains one)")
    try:
        stored = content["version"]
        if _digest({k: v for k, v in content.items() if k != "version"}) != stored:
            raise LamError(f"model artifact {path}: content does not match its version {stored} (corrupt)")
        return LoadedModel(content)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise LamError(f"model artifact {path}: corrupt ({type(exc).__name__}: {exc})") from None
