"""The naive design a newcomer would write, for comparison: one Faust agent handling one touchpoint at a time.

    python -m bench.naive        (configured like `lam worker`, through LAM_* variables)

Per touchpoint: decode it (the same `streams.decode` the engine uses, so parsing is not what differs), read the
customer's state from a Faust table as a JSON document (hidden state as a list of floats), one `LoadedModel.step`
call with a batch of one, a threshold check with hysteresis, the state written back as JSON, and an action sent with
`topic.send` when a threshold is crossed. Its policy is thinner than the engine's (no cool-downs, contact limits or
reasons), which only flatters it.
"""

from __future__ import annotations

import time

import faust
import numpy as np
import orjson

from model.artifact import LoadedModel, load
from streams import topics
from streams.decide import Policy, load_policy
from streams.decode import Rejected, decode
from streams.settings import Settings
from streams.settings import load as load_settings

STATE_TABLE = "naive-state"


def create_app(settings: Settings, model: LoadedModel, policy: Policy, rocksdb: dict[str, int]) -> faust.App:
    app = faust.App(settings.app_id, broker=f"kafka://{settings.bootstrap}", store="rocksdb://",
                    datadir=str(settings.data_dir), topic_partitions=settings.partitions, topic_replication_factor=1,
                    web_port=settings.web_port, web_bind="127.0.0.1", web_in_thread=False,
                    consumer_auto_offset_reset="earliest", producer_acks=-1)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inbound = app.topic(settings.input_topic, partitions=settings.partitions, **raw)
    actions = app.topic(settings.action_topic, **raw)
    states = app.Table(STATE_TABLE, partitions=settings.partitions, options=rocksdb)  # JSON values: faust's default
    thresholds, values = policy.thresholds, np.array([a.value for a in policy.actions])
    h0 = model.initial_state(1)[0].tolist()
    counts0 = [0.0] * model.config.n_event_types

    @app.agent(inbound, name="naive-touchpoints")
    async def touchpoints(stream: faust.StreamT) -> None:
        async for value in stream:
            event = decode(value)
            if isinstance(event, Rejected):
                continue
            state = states.get(event.customer_id) or {"hidden": h0, "counts": counts0, "last_time": 0,
                                                      "first_time": 0, "armed": [1] * len(thresholds)}
            hidden, counts, probs = model.step(
                np.array([state["hidden"]], dtype=np.float32), np.array([state["counts"]], dtype=np.float32),
                [event], np.array([state["last_time"]], dtype=np.int64),
                np.array([state["first_time"]], dtype=np.int64))
            p = probs[0][policy.product_index]
            armed = np.array(state["armed"], dtype=bool)
            crossed = armed & (p >= thresholds)
            rearm = p < thresholds - policy.rearm_margin
            states[event.customer_id] = {"hidden": hidden[0].tolist(), "counts": counts[0].tolist(),
                                         "probs": probs[0].tolist(), "last_time": event.event_time_ms,
                                         "first_time": state["first_time"] or event.event_time_ms,
                                         "armed": np.where(rearm, 1, np.where(crossed, 0, armed)).tolist()}
            if crossed.any():
                best = int(np.argmax(np.where(crossed, p * values, -1.0)))
                await actions.send(key=event.customer_id.encode(), value=orjson.dumps({
                    "customer_id": event.customer_id, "action": policy.actions[best].name,
                    "probability": float(p[best]), "trigger": {"event_time": event.event_time_ms},
                    "emitted_at": int(time.time() * 1000)}))

    return app


def main() -> None:
    from streams.app import rocksdb_options

    settings = load_settings()
    model = load(settings.model_path)
    policy = load_policy(settings.policy_path, model.products)
    topics.ensure(settings)
    app = create_app(settings, model, policy, rocksdb_options(settings.rocksdb_cache_mb))
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
