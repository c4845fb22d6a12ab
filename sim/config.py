"""The knobs of a simulated world; kept apart from `sim.world` so that `lam` can show defaults without numpy."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

FORMATS = ("jsonl", "clickstream-csv")  # what `lam simulate --format` writes: see sim.write

@dataclass(frozen=True, slots=True)
class WorldConfig:
    customers: int = 50_000  # the default world of docs/model.md
    days: float = 180.0
    start_ms: int = 1_735_689_600_000  # 2025-01-01T00:00:00Z
    seed: int = 0
    horizon_days: float = 7.0  # the window of `World.propensity`
    never_buyer_share: float = 0.3
    churn_share: float = 0.15  # customers who leave at a uniform time within the period
    life_event_rate: float = 1 / 120  # life events per customer per day, over all products
    intent_rise_days: float = 1.0
    intent_decay_days: float = 6.0
    purchase_rate: float = 0.1  # median purchase hazard per unit of intent, per day
    research_rate: float = 0.8  # median journey touchpoints per unit of intent, per day
    stage_advance: float = 0.45  # chance that a journey touchpoint goes one stage deeper
    browse_rate: float = 0.012  # median background touchpoints per day
    browse_spread: float = 1.2  # sigma of the log-normal browsing rate: a few customers browse a lot
    subscribed_share: float = 0.6
    campaign_every_days: float = 14.0
    call_effect: float = 0.6  # a call turns this share of a customer's 7-day propensity into an order now
    call_base_rate: float = 0.003  # chance that a call sells to a customer with no intent at all

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorldConfig:
        return cls(**json.loads(text))
