"""A synthetic population whose hidden purchase intent shows through touchpoints, with the truth kept.

The generative story (times in days, one customer at a time, all drawn in bulk by `sim.generate`):

1. Traits. Each customer has a purchase sensitivity (zero for the `never_buyer_share` who never buy, however
   much they browse), a research habit (touchpoints per unit of intent), a background browsing rate (heavy-tailed,
   three times higher for those who never buy), a web/app preference, a campaign-opening habit (zero if not
   subscribed), an affinity over the catalogue's products and, for `churn_share` of them, a churn day after which
   they do nothing at all.
2. Life events. A move, a new job, a broken phone: a Poisson process (`life_event_rate` per day) picks a product
   by affinity and adds intent a * (exp(-s/decay) - exp(-s/rise)) with a ~ Exp(1): intent builds over a day or so
   and fades over a week or two, so old activity means little and recent activity a lot.
3. Purchases. A customer buys a product at hazard beta * intent. Buying satisfies the need: that product's
   intent drops to zero, so a customer who just bought is not a prospect for it.
4. Journey touchpoints arrive at a rate proportional to intent, about the product, and each may take the journey
   one stage deeper: product_view -> compare -> inquiry (call centre or chat) -> store_visit or add_to_cart.
   A compare, an inquiry and a store visit within days mark a strong, live journey; the same counts spread over
   months come from weak journeys and background noise.
5. Noise. Background page and product views (including out-of-catalogue accessories), billing inquiries and
   service store visits at a steady rate; campaign mails every `campaign_every_days` whose opens and clicks
   carry no intent at all.

Ground truth: `World.propensity(ids, t)` is the probability that each customer buys each product within
`horizon_days` after t, given the hidden state at t (intents, sensitivity, churn day) and averaging over the
life events still to come. It is exact for the process above, so realised purchases match it in expectation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np

from sim import generate, intent
from sim.config import WorldConfig
from sim.generate import Events, Latent
from streams.contract import Touchpoint, catalogue
from streams.errors import LamError

DAY_MS = 86_400_000
__all__ = ["DAY_MS", "World", "WorldConfig", "campaign_name"]


class World:
    """A deterministic world: the same config gives the same customers, events and truth."""

    def __init__(self, config: WorldConfig = WorldConfig(), latent: Latent | None = None) -> None:
        if config.customers < 1 or config.days <= 0:
            raise LamError(f"world: expected customers >= 1 and days > 0; got {config.customers}, {config.days}")
        self.config = config
        self.products = catalogue().products
        self._latent = latent

    @property
    def latent(self) -> Latent:
        if self._latent is None:
            self._latent = generate.latent(self.config)
        return self._latent

    @cached_property
    def columns(self) -> Events:
        """All touchpoints as numpy columns in event-time order: the fast path for writers."""
        return generate.events(self.config, self.latent)

    @cached_property
    def _id_width(self) -> int:
        return max(7, len(str(self.config.customers - 1)))

    def customer_ids(self, indices: np.ndarray | None = None) -> list[str]:
        width = self._id_width
        rows = range(self.config.customers) if indices is None else indices.tolist()
        return [f"c{i:0{width}d}" for i in rows]

    def index_of(self, customer_ids: np.ndarray) -> np.ndarray:
        """Row indices of customers given as ids ("c0000123") or as integer indices already."""
        ids = np.asarray(customer_ids)
        if ids.dtype.kind in "iu":
            idx = ids.astype(np.int64)
        else:
            try:
                idx = np.array([int(c[1:]) for c in ids.tolist()], dtype=np.int64)
            except ValueError:
                raise LamError("customer ids: expected the form c0000123") from None
        if idx.size and (idx.min() < 0 or idx.max() >= self.config.customers):
            raise LamError(f"customer ids: expected indices below {self.config.customers}")
        return idx

    def events(self) -> Iterator[Touchpoint]:
        """Every touchpoint in event-time order."""
        cols, items = self.columns, generate.item_names()
        channels, event_types = catalogue().channels, catalogue().event_types
        ids = self.customer_ids()
        step = 65_536
        for lo in range(0, len(cols), step):
            chunk = slice(lo, lo + step)
            for c, t, ch, et, it, v, cp in zip(cols.customer[chunk].tolist(), cols.time_ms[chunk].tolist(),
                                               cols.channel[chunk].tolist(), cols.event_type[chunk].tolist(),
                                               cols.item[chunk].tolist(), cols.value[chunk].tolist(),
                                               cols.campaign[chunk].tolist()):
                yield Touchpoint(ids[c], t, channels[ch], event_types[et], None if it < 0 else items[it],
                                 None if v != v else v, None if cp < 0 else {"campaign": campaign_name(cp)})

    def propensity(self, customer_ids: np.ndarray, t_ms: int) -> np.ndarray:
        """(n, P) probability that each customer buys each catalogue product within `horizon_days` after t_ms."""
        cfg, lat = self.config, self.latent
        idx = self.index_of(customer_ids)
        t = (t_ms - cfg.start_ms) / DAY_MS
        a, b = self._intent_at(idx, t)
        horizon = np.clip(np.minimum(cfg.horizon_days, lat.alive_until[idx] - t), 0.0, None)  # (n,)
        beta = lat.beta[idx]
        now = beta[:, None] * intent.mass(a, b, horizon[:, None], cfg.intent_decay_days, cfg.intent_rise_days)
        to_come = (cfg.life_event_rate * lat.affinity[idx]
                   * intent.future_hazard(beta, horizon, cfg.intent_decay_days, cfg.intent_rise_days)[:, None])
        return -np.expm1(-(now + to_come))

    def _intent_at(self, idx: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(n, P) intent sums (A, B) at day t: life events up to t since the product was last bought."""
        cfg, lat = self.config, self.latent
        rows, q = _rows_of(self._life_ptr, idx)
        cust_prod = (q, lat.product[rows])
        before = lat.day[rows] <= t
        bought_at = lat.day[rows] + lat.span[rows]
        last_buy = np.full((len(idx), len(self.products)), -np.inf)
        done = before & lat.bought[rows] & (bought_at <= t)
        np.maximum.at(last_buy, (q[done], cust_prod[1][done]), bought_at[done])
        live = before & (lat.day[rows] > last_buy[cust_prod])
        age = t - lat.day[rows][live]
        a, b = np.zeros_like(last_buy), np.zeros_like(last_buy)
        np.add.at(a, (q[live], cust_prod[1][live]), lat.amp[rows][live] * np.exp(-age / cfg.intent_decay_days))
        np.add.at(b, (q[live], cust_prod[1][live]), lat.amp[rows][live] * np.exp(-age / cfg.intent_rise_days))
        return a, b

    @cached_property
    def _life_ptr(self) -> np.ndarray:
        return np.searchsorted(self.latent.customer, np.arange(self.config.customers + 1))

    def purchases(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(customer index, product index, epoch ms) of every purchase, in customer order."""
        lat = self.latent
        rows = np.flatnonzero(lat.bought)
        times = self.config.start_ms + np.rint((lat.day[rows] + lat.span[rows]) * DAY_MS).astype(np.int64)
        return lat.customer[rows], lat.product[rows], times

    def save_truth(self, path: str | Path) -> None:
        """The config and hidden state, enough to compute `propensity` and `call` without regenerating."""
        np.savez_compressed(path, config=np.array(self.config.to_json()), **self.latent.arrays())

    @classmethod
    def load_truth(cls, path: str | Path) -> World:
        try:
            with np.load(path) as data:
                config = WorldConfig.from_json(str(data["config"]))
                latent = Latent(**{f.name: data[f.name] for f in dataclasses.fields(Latent)})
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise LamError(f"{path}: not a world truth file ({exc})") from None
        return cls(config, latent)


def campaign_name(k: int) -> str:
    return f"cmp-{k:03d}"


def _rows_of(ptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a customer-sorted table belonging to customers `idx`, and which query each row answers."""
    counts = ptr[idx + 1] - ptr[idx]
    q = np.repeat(np.arange(len(idx)), counts)
    starts = np.repeat(ptr[idx] - (np.cumsum(counts) - counts), counts)
    return starts + np.arange(len(q)), q
