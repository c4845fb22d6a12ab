"""The GRU over a customer's touchpoints and its heads; one set of weights, two paths.

`forward` runs whole (padded) sequences for training and offline scoring; `step` advances a batch of stored
states by one touchpoint each for the streaming worker. Both go through the same `nn.GRU` module (step is a
sequence of length one), which is what keeps them equal to float rounding; tests/unit/test_model_parity.py
holds them to it.

Heads read the state plus `encode.context`: the log time elapsed since the last touchpoint, because a score is
asked for at an arbitrary moment (a daily call list), not only at the instant of an event (a customer whose
busy week was a month ago is not the same prospect as one whose busy week is now); the time since the first;
and the running count of each event type, which a recurrent state only approximates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from model.encode import N_CONTEXT_TIMES, N_NUMERIC


@dataclass(frozen=True, slots=True)
class ModelConfig:
    n_event_types: int
    n_channels: int
    n_items: int
    n_heads: int
    hidden_size: int = 64
    event_dim: int = 16
    channel_dim: int = 4
    item_dim: int = 16
    head_hidden: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def input_size(self) -> int:
        return self.event_dim + self.channel_dim + self.item_dim + N_NUMERIC

    @property
    def context_size(self) -> int:
        return N_CONTEXT_TIMES + 2 * self.n_event_types


class Network(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.event_emb = nn.Embedding(config.n_event_types, config.event_dim)
        self.channel_emb = nn.Embedding(config.n_channels, config.channel_dim)
        self.item_emb = nn.Embedding(config.n_items, config.item_dim)
        self.gru = nn.GRU(config.input_size, config.hidden_size, batch_first=True)
        self.conversion = nn.Sequential(
            nn.Linear(config.hidden_size + config.context_size, config.head_hidden), nn.ReLU(),
            nn.Linear(config.head_hidden, config.n_heads),
        )
        # A linear path on the context beside the MLP (wide and deep): the heads can always fall back to a
        # logistic regression on counts and recency, the baseline a marketer would use, and add what the state knows.
        self.wide = nn.Linear(config.context_size, config.n_heads)
        self.next_event = nn.Linear(config.hidden_size, config.n_event_types)

    def _inputs(self, cats: torch.Tensor, nums: torch.Tensor) -> torch.Tensor:
        # cats (..., 3) int64, nums (..., N_NUMERIC) -> (..., input_size)
        return torch.cat([
            self.event_emb(cats[..., 0]), self.channel_emb(cats[..., 1]), self.item_emb(cats[..., 2]), nums,
        ], dim=-1)

    def forward(self, cats: torch.Tensor, nums: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """States after each touchpoint: cats (B, T, 3), nums (B, T, N_NUMERIC), h0 (B, H) -> (B, T, H)."""
        x = self._inputs(cats, nums)  # (B, T, input_size)
        states, _ = self.gru(x, None if h0 is None else h0.unsqueeze(0).contiguous())
        return states

    def step(self, h: torch.Tensor, cats: torch.Tensor, nums: torch.Tensor) -> torch.Tensor:
        """One touchpoint per row: h (B, H), cats (B, 3), nums (B, N_NUMERIC) -> new states (B, H)."""
        return self.forward(cats.unsqueeze(1), nums.unsqueeze(1), h)[:, 0]

    def conversion_logits(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """h (..., H), context (..., context_size) from `encode.context` -> logits (..., P)."""
        return self.conversion(torch.cat([h, context], dim=-1)) + self.wide(context)

    def head_features(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """What the heads' output weights read: the MLP's hidden units and the context, (..., head_hidden +
        context_size); each head's logit is an affine function of these (see `set_head_output`)."""
        return torch.cat([self.conversion[:2](torch.cat([h, context], dim=-1)), context], dim=-1)

    def set_head_output(self, head: int, weights: np.ndarray, bias: float) -> None:
        """Make head `head`'s logit `weights @ head_features + bias`, leaving every other weight as it is."""
        hidden = self.config.head_hidden
        with torch.no_grad():
            self.conversion[2].weight[head] = torch.from_numpy(np.asarray(weights[:hidden], dtype=np.float32))
            self.conversion[2].bias[head] = float(bias)
            self.wide.weight[head] = torch.from_numpy(np.asarray(weights[hidden:], dtype=np.float32))
            self.wide.bias[head] = 0.0

    def next_event_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., H) -> logits over the next touchpoint's event type (..., n_event_types)."""
        return self.next_event(h)

    def initial_state(self, n: int) -> torch.Tensor:
        return torch.zeros(n, self.config.hidden_size)
