"""The columnar generator behind `sim.world.World`: customers' hidden traits, their intent journeys, and every
touchpoint those produce. Everything is drawn in bulk with numpy; the only Python loops run over journey rounds
(a customer's k-th life event for a product) and campaign sends, a few dozen iterations in all.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from sim import intent
from streams.contract import catalogue

if TYPE_CHECKING:
    from sim.config import WorldConfig

ACCESSORIES = 400  # out-of-catalogue items ("acc-0042") that browsers look at
PRICES = {"fiber_1g": 540.0, "mobile_5g": 360.0, "tv_bundle": 480.0, "device_upgrade": 900.0}
DEFAULT_PRICE = 400.0


@dataclass(frozen=True)
class Latent:
    """The hidden state of the world: per-customer traits, then one row per life event, sorted by
    (customer, product, day). `span` is how long that life event's journey segment was observed: until the
    purchase it ended in (`bought`), the next life event for the same product, churn, or the end."""

    beta: np.ndarray  # (N,) purchases per day per unit of intent; 0 for customers who never buy
    research: np.ndarray  # (N,) touchpoints per day per unit of intent
    browse: np.ndarray  # (N,) background touchpoints per day, unrelated to intent
    app_share: np.ndarray  # (N,) share of web-or-app touchpoints made in the app
    open_prob: np.ndarray  # (N,) chance to open a campaign mail; 0 if not subscribed
    affinity: np.ndarray  # (N, P) which product a life event is about; rows sum to 1
    alive_until: np.ndarray  # (N,) day of churn; inf for customers who stay
    customer: np.ndarray  # (L,) int32
    product: np.ndarray  # (L,) int8
    day: np.ndarray  # (L,) days since start
    amp: np.ndarray  # (L,) amplitude, Exp(1)
    a: np.ndarray  # (L,) intent sums (A, B) right after this life event
    b: np.ndarray  # (L,)
    span: np.ndarray  # (L,)
    bought: np.ndarray  # (L,) bool

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Events:
    """Touchpoints as columns, in event-time order; codes index catalogue channels, event types and `item_names`."""

    customer: np.ndarray  # int32
    time_ms: np.ndarray  # int64
    channel: np.ndarray  # int8
    event_type: np.ndarray  # int8
    item: np.ndarray  # int16, -1 for none
    value: np.ndarray  # float64, nan for none
    campaign: np.ndarray  # int16, -1 for none

    def __len__(self) -> int:
        return len(self.customer)


def item_names() -> list[str]:
    return [*catalogue().products, *(f"acc-{k:04d}" for k in range(ACCESSORIES))]


def streams(seed: int) -> dict[str, np.random.Generator]:
    """One generator per part, so that changing how one part draws leaves the others' draws unchanged."""
    names = ("traits", "life", "purchase", "journey", "background", "campaign", "purchase_events")
    return {n: np.random.default_rng(s) for n, s in zip(names, np.random.SeedSequence(seed).spawn(len(names)))}


def latent(cfg: WorldConfig) -> Latent:
    rngs = streams(cfg.seed)
    rng, n, n_products = rngs["traits"], cfg.customers, len(catalogue().products)
    never = rng.random(n) < cfg.never_buyer_share
    beta = np.where(never, 0.0, cfg.purchase_rate * rng.lognormal(0.0, 0.5, n))
    research = cfg.research_rate * rng.lognormal(0.0, 0.4, n)
    # Window shoppers browse more than buyers do, so heavy browsing alone is a poor sign of a sale.
    browse = cfg.browse_rate * rng.lognormal(0.0, cfg.browse_spread, n) * np.where(never, 3.0, 1.0)
    app_share = rng.beta(2.0, 2.0, n)
    open_prob = np.where(rng.random(n) < cfg.subscribed_share, rng.beta(1.0, 3.0, n), 0.0)
    affinity = rng.dirichlet(np.ones(n_products), n)
    churns = rng.random(n) < cfg.churn_share
    alive_until = np.where(churns, rng.uniform(0.0, cfg.days, n), np.inf)
    cust, prod, day, amp = _life_events(cfg, rngs["life"], affinity, np.minimum(alive_until, cfg.days))
    a, b, span, bought = _journeys(cfg, rngs["purchase"], beta, cust, prod, day, amp,
                                   np.minimum(alive_until, cfg.days))
    return Latent(beta, research, browse, app_share, open_prob, affinity, alive_until,
                  cust, prod, day, amp, a, b, span, bought)


def _life_events(cfg: WorldConfig, rng: np.random.Generator, affinity: np.ndarray, end: np.ndarray
                 ) -> tuple[np.ndarray, ...]:
    cust = np.repeat(np.arange(len(end), dtype=np.int32), rng.poisson(cfg.life_event_rate * end))
    day = rng.uniform(0.0, end[cust])
    prod = (rng.random(len(cust))[:, None] > np.cumsum(affinity[cust], axis=1)[:, :-1]).sum(axis=1).astype(np.int8)
    amp = rng.exponential(1.0, len(cust))
    order = np.lexsort((day, prod, cust))
    return cust[order], prod[order], day[order], amp[order]


def _journeys(cfg: WorldConfig, rng: np.random.Generator, beta: np.ndarray, cust: np.ndarray, prod: np.ndarray,
              day: np.ndarray, amp: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, ...]:
    """Run each (customer, product)'s intent through its life events in rounds, drawing purchases.

    Between life events intent only decays, so a purchase is one exponential draw against the segment's
    hazard mass; a purchase satisfies the need and resets that product's intent to zero.
    """
    n = len(cust)
    key = cust.astype(np.int64) * 128 + prod
    first = np.r_[True, key[1:] != key[:-1]][:n]  # (customer, product) groups start here
    group = np.cumsum(first) - 1
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    has_next = np.r_[~first[1:], False][:n]
    seg_end = np.where(has_next, np.r_[day[1:], 0.0][:n], end[cust])
    need = rng.exponential(1.0, n)
    with np.errstate(divide="ignore"):
        need = need / beta[cust]
    a_out, b_out, span, bought = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, bool)
    n_groups = int(first.sum())
    a_now, b_now, last = np.zeros(n_groups), np.zeros(n_groups), np.zeros(n_groups)
    for r in range(int(rank.max(initial=-1)) + 1):
        rows = np.flatnonzero(rank == r)
        g = group[rows]
        gap = day[rows] - last[g]
        a = a_now[g] * np.exp(-gap / cfg.intent_decay_days) + amp[rows]
        b = b_now[g] * np.exp(-gap / cfg.intent_rise_days) + amp[rows]
        length = seg_end[rows] - day[rows]
        buy = need[rows] < intent.mass(a, b, length, cfg.intent_decay_days, cfg.intent_rise_days)
        at = intent.invert(a[buy], b[buy], need[rows][buy], length[buy], cfg.intent_decay_days,
                           cfg.intent_rise_days)
        length[buy] = at
        a_out[rows], b_out[rows], span[rows], bought[rows] = a, b, length, buy
        a_now[g], b_now[g], last[g] = np.where(buy, 0.0, a), np.where(buy, 0.0, b), day[rows]
    return a_out, b_out, span, bought


def events(cfg: WorldConfig, lat: Latent) -> Events:
    """Every touchpoint of the world, sorted by (event time, customer)."""
    rngs = streams(cfg.seed)
    end = np.minimum(lat.alive_until, cfg.days)
    parts = [_journey_touchpoints(cfg, rngs["journey"], lat), _purchases(rngs["purchase_events"], lat),
             _background(rngs["background"], lat, end), _campaigns(cfg, rngs["campaign"], lat, end)]
    cust, day, channel, event_type, item, value, campaign = (np.concatenate(c) for c in zip(*parts))
    time_ms = cfg.start_ms + np.rint(day * 86_400_000).astype(np.int64)
    order = np.lexsort((cust, time_ms))
    return Events(cust[order].astype(np.int32), time_ms[order], channel[order].astype(np.int8),
                  event_type[order].astype(np.int8), item[order].astype(np.int16), value[order],
                  campaign[order].astype(np.int16))


Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _codes(kind: str, *names: str) -> np.ndarray:
    known = getattr(catalogue(), kind)
    return np.array([known.index(name) for name in names], dtype=np.int8)


def _part(cust: np.ndarray, day: np.ndarray, channel: np.ndarray, event_type: np.ndarray,
          item: np.ndarray | None = None, value: np.ndarray | None = None, campaign: np.ndarray | None = None
          ) -> Part:
    n = len(cust)
    return (cust, day, channel, event_type, np.full(n, -1) if item is None else item,
            np.full(n, np.nan) if value is None else value, np.full(n, -1) if campaign is None else campaign)


def _web_or_app(rng: np.random.Generator, lat: Latent, cust: np.ndarray) -> np.ndarray:
    web, app = _codes("channels", "web", "app")
    return np.where(rng.random(len(cust)) < lat.app_share[cust], app, web)


def _journey_touchpoints(cfg: WorldConfig, rng: np.random.Generator, lat: Latent) -> Part:
    """Touchpoints at a rate proportional to intent; each one may take the journey a stage deeper
    (view, compare, inquiry, store visit or cart), so deep stages only show up in strong, recent journeys."""
    decay, rise = cfg.intent_decay_days, cfg.intent_rise_days
    seen = intent.mass(lat.a, lat.b, lat.span, decay, rise)
    row = np.repeat(np.arange(len(seen)), rng.poisson(lat.research[lat.customer] * seen))
    x = intent.invert(lat.a[row], lat.b[row], rng.random(len(row)) * seen[row], lat.span[row], decay, rise)
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    first = np.r_[True, row[1:] != row[:-1]][:len(row)]
    steps = np.cumsum(~first & (rng.random(len(row)) < cfg.stage_advance))
    stage = np.minimum(steps - np.maximum.accumulate(np.where(first, steps, 0)), 3)
    cust = lat.customer[row]
    web_app = _web_or_app(rng, lat, cust)
    call_centre, web, store = _codes("channels", "call_centre", "web", "store")
    view, compare, inquiry, visit, cart = _codes("event_types", "product_view", "compare", "inquiry",
                                                 "store_visit", "add_to_cart")
    coin = rng.random(len(row)) < 0.5
    event_type = np.select([stage == 0, stage == 1, stage == 2], [view, compare, inquiry],
                           np.where(coin, visit, cart))
    channel = np.select([stage <= 1, stage == 2], [web_app, np.where(coin, call_centre, web)],
                        np.where(coin, store, web_app))
    return _part(cust, lat.day[row] + x, channel, event_type, lat.product[row].astype(np.int16))


def _purchases(rng: np.random.Generator, lat: Latent) -> Part:
    rows = np.flatnonzero(lat.bought)
    cust, prod = lat.customer[rows], lat.product[rows]
    channels = _codes("channels", "web", "app", "store", "call_centre")
    channel = channels[(rng.random(len(rows))[:, None] > np.array([0.35, 0.55, 0.9])).sum(axis=1)]
    prices = np.array([PRICES.get(p, DEFAULT_PRICE) for p in catalogue().products])
    value = np.round(prices[prod] * rng.lognormal(0.0, 0.15, len(rows)), 2)
    purchase = _codes("event_types", "purchase")[0]
    return _part(cust, lat.day[rows] + lat.span[rows], channel, np.full(len(rows), purchase),
                 prod.astype(np.int16), value)


def _background(rng: np.random.Generator, lat: Latent, end: np.ndarray) -> Part:
    """Browsing and service contacts that have nothing to do with intent: the noise a model must see through."""
    cust = np.repeat(np.arange(len(end), dtype=np.int32), rng.poisson(lat.browse * end))
    n, n_products = len(cust), len(catalogue().products)
    day = rng.uniform(0.0, end[cust])
    kinds = _codes("event_types", "page_view", "product_view", "compare", "inquiry", "store_visit")
    kind = (rng.random(n)[:, None] > np.array([0.45, 0.83, 0.91, 0.97])).sum(axis=1)
    accessory = rng.random(n) < 0.4
    item = np.where(accessory & (kind == 1), n_products + rng.integers(0, ACCESSORIES, n),
                    rng.integers(0, n_products, n))
    item = np.where((kind == 1) | (kind == 2), item, -1)
    call_centre, store = _codes("channels", "call_centre", "store")
    channel = np.select([kind <= 2, kind == 3], [_web_or_app(rng, lat, cust), call_centre], store)
    return _part(cust, day, channel, kinds[kind], item)


def _campaigns(cfg: WorldConfig, rng: np.random.Generator, lat: Latent, end: np.ndarray) -> Part:
    """Mail campaigns every few days, each promoting a product; opens and clicks say little about intent."""
    subscribers = np.flatnonzero(lat.open_prob > 0).astype(np.int32)
    n_products = len(catalogue().products)
    campaign_channel = _codes("channels", "campaign")[0]
    opened_type, clicked_type = _codes("event_types", "campaign_open", "campaign_click")
    parts = []
    for k, send in enumerate(np.arange(0.5 * cfg.campaign_every_days, cfg.days, cfg.campaign_every_days)):
        opens = subscribers[rng.random(len(subscribers)) < lat.open_prob[subscribers]]
        at = send + rng.exponential(0.5, len(opens))
        opens, at = opens[at < end[opens]], at[at < end[opens]]
        clicked = rng.random(len(opens)) < 0.15
        clicks, click_at = opens[clicked], at[clicked] + rng.exponential(0.01, int(clicked.sum()))
        cust = np.r_[opens, clicks]
        n_opens = len(opens)
        event_type = np.r_[np.full(n_opens, opened_type), np.full(len(clicks), clicked_type)]
        item = np.r_[np.full(n_opens, -1), np.full(len(clicks), k % n_products)]
        parts.append(_part(cust, np.r_[at, click_at], np.full(len(cust), campaign_channel), event_type, item,
                           campaign=np.full(len(cust), k)))
    if not parts:
        return _part(*(np.zeros(0, dtype=t) for t in (np.int32, float, np.int8, np.int8)))
    return tuple(np.concatenate(c) for c in zip(*parts))
