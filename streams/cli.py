"""`lam`: the one command-line entry point.

Each subcommand names the Settings fields it takes (as `--flag`, with `LAM_*` fallbacks), builds Settings once,
and calls one function in the module that does the work. Exit codes: 0 ok, 1 runtime failure (one line on
stderr), 2 usage error, 3 `broker status` when no broker runs, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from streams import settings as settings_mod
from streams.errors import LamError, UsageError
from streams.settings import Settings

BROKER_FIELDS = ("home", "broker_port", "broker_heap", "broker_start_timeout")
CLIENT_FIELDS = ("broker_port", "bootstrap_servers")
TOPIC_FIELDS = CLIENT_FIELDS + ("input_topic", "consent_topic", "action_topic", "dead_letter_topic", "partitions")
WORKER_FIELDS = TOPIC_FIELDS + ("app_id", "batch_size", "batch_timeout", "standby_replicas", "session_timeout",
                                "data_dir", "web_port", "model_path", "policy_path", "rocksdb_cache_mb",
                                "state_cache_mb", "state_write_delay", "torch_threads")

BENCH_FIELDS = CLIENT_FIELDS + ("partitions", "batch_size", "batch_timeout", "model_path", "rocksdb_cache_mb")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    settings: tuple[str, ...]
    run: Callable[[Settings, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def _broker(settings: Settings, args: argparse.Namespace) -> int:
    from deploy import broker

    if args.action == "start":
        print(broker.start(settings))
    elif args.action == "stop":
        print(broker.stop(settings))
    else:
        running, line = broker.status(settings)
        print(line)
        return 0 if running else 3
    return 0


def _broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"), help="start (idempotent), stop, or status")


def _smoke(settings: Settings, args: argparse.Namespace) -> int:
    from streams.smoke import roundtrip

    print(roundtrip(settings, messages=args.messages, partitions=args.partitions))
    return 0


def _smoke_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=1000, help="messages to send and read back")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the scratch topic")


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from streams.demo import run

    print(run(settings, seconds=args.seconds, rate=args.rate, customers=args.customers))
    return 0


def _demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: run until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=500.0, help="live touchpoints per second")
    parser.add_argument("--customers", type=int, default=20_000, help="customers in the live simulated world")


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from sim.write import simulate
    from sim.world import World

    print(simulate(World(_world_config(args)), args.out, args.format))
    return 0


def _world_args(parser: argparse.ArgumentParser) -> None:
    from sim.config import WorldConfig

    defaults = WorldConfig()
    parser.add_argument("--customers", type=int, default=defaults.customers, help="customers in the world")
    parser.add_argument("--days", type=float, default=defaults.days, help="days of history")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed: same seed, same world")


def _world_config(args: argparse.Namespace):  # -> sim.config.WorldConfig
    from sim.config import WorldConfig

    return WorldConfig(customers=args.customers, days=args.days, seed=args.seed)


def _simulate_args(parser: argparse.ArgumentParser) -> None:
    from sim.config import FORMATS

    parser.add_argument("--out", required=True,
                        help="file to write (gzip if it ends in .gz); truth goes to OUT.truth.npz")
    _world_args(parser)
    parser.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                        help="JSON lines of touchpoints, or the clickstream CSV layout (views, carts, purchases)")


def _produce(settings: Settings, args: argparse.Namespace) -> int:
    from streams import produce, sources

    mapping = None
    if args.mapping or args.column or args.constant:
        base = sources.Mapping.load(args.mapping) if args.mapping else sources.Mapping()
        mapping = base.amended(args.column, args.constant)
    plan = produce.Plan(file=args.file, mapping=mapping, sort=args.sort,
                        world=_world_config(args) if args.simulate else None,
                        rate=args.rate, speedup=args.speedup, limit=args.limit)
    print(produce.run(settings, plan))
    return 0


def _produce_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="touchpoints to replay: JSON lines or CSV (with a mapping), optionally .gz")
    source.add_argument("--simulate", action="store_true", help="stream a simulated world's touchpoints instead")
    parser.add_argument("--mapping", help="CSV column mapping, a TOML file such as streams/mappings/retailrocket.toml")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                        help="map a CSV column to a contract field (repeatable; amends --mapping)")
    parser.add_argument("--constant", action="append", default=[], metavar="FIELD=VALUE",
                        help="give a contract field one value on every row, e.g. channel=web (repeatable)")
    parser.add_argument("--sort", action="store_true",
                        help="sort the file by event time in memory first (else it must already be in order)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    pace.add_argument("--speedup", type=float, help="replay at this many times the events' original pace")
    parser.add_argument("--limit", type=int, help="stop after this many touchpoints")
    _world_args(parser)


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from model.data import parse_time
    from model.train import TrainConfig, train_file

    config = TrainConfig(horizon_ms=round(args.horizon_days * 86_400_000), epochs=args.epochs, seed=args.seed,
                         split_time_ms=parse_time(args.split_time) if args.split_time else None,
                         hidden_size=args.hidden_size, learning_rate=args.learning_rate, refit_days=args.refit_days)
    out = args.out or settings.model_path
    result = train_file(args.events, out, config, args.catalogue, args.mapping, args.threads, args.item_buckets)
    any_head = result.metrics.get("validation", {}).get("any")
    validation = (f"validation AUC (any purchase) {any_head['auc']:.3f}" if any_head
                  else "no validation: nothing after the split to score")
    print(f"model {result.version} -> {out}: {result.n_events:,} touchpoints, {result.seconds:.0f} s; {validation}")
    return 0


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`, else a one-line usage error."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = minimum - 1
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}; got {text!r}")
        return n
    return parse


def _train_args(parser: argparse.ArgumentParser) -> None:
    from model.train import TrainConfig
    from model.vocab import CATALOGUE

    defaults = TrainConfig()
    parser.add_argument("--events", required=True, help="touchpoint file (JSON lines, or CSV with --mapping)")
    parser.add_argument("--out", default=None, help="artifact to write [default: --model-path]")
    parser.add_argument("--split-time", default=None,
                        help="train before, validate after (epoch ms, YYYY-MM-DD or ISO-8601 with zone) "
                             "[default: 3/4 of the file's time span]")
    parser.add_argument("--horizon-days", type=float, default=defaults.horizon_ms / 86_400_000,
                        help="conversion = a purchase within this many days")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training period")
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size, help="GRU state size")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="Adam's step size")
    parser.add_argument("--refit-days", type=_int_at_least(0), default=defaults.refit_days,
                        help="refit the heads' output on the daily scoring points of this many days before the "
                             "split; 0 keeps the trained output")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="same data and seed, same model")
    parser.add_argument("--catalogue", default=CATALOGUE, help="vocabulary file (channels, event types, products)")
    parser.add_argument("--item-buckets", type=_int_at_least(1), default=None,
                        help="hash buckets for items outside the catalogue; 1 ignores their ids, which helps when "
                             "each bucket would mix hundreds of unrelated items [default: the catalogue's]")
    parser.add_argument("--mapping", default=None, help="CSV column mapping (TOML), as for `lam produce`")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from model.data import parse_time
    from model.evaluate import EvalConfig, evaluate_file

    config = EvalConfig(dataset=args.dataset, top_share=args.top_percent / 100, every_days=args.every_days,
                        seed=args.seed,
                        split_time_ms=parse_time(args.split_time) if args.split_time else None,
                        end_time_ms=parse_time(args.end_time) if args.end_time else None,
                        horizon_ms=round(args.horizon_days * 86_400_000) if args.horizon_days else None)
    report, paths = evaluate_file(args.events, args.model or settings.model_path, args.out_dir, config,
                                  args.mapping, args.truth, args.threads)
    methods = report["methods"]
    for name, m in methods.items():
        print(f"{name:>20}: AUC {m['auc']:.3f}  order rate in top {config.top_share:.0%} {m['top_order_rate']:.4f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", required=True, help="touchpoint file (JSON lines, or CSV with --mapping)")
    parser.add_argument("--model", default=None, help="artifact to evaluate [default: --model-path]")
    parser.add_argument("--out-dir", default="docs", help="where model.md, model.json and the lift PNG go")
    parser.add_argument("--dataset", default="simulated", help="key of these figures in model.json")
    parser.add_argument("--split-time", default=None, help="evaluate from here [default: the model's split]")
    parser.add_argument("--end-time", default=None, help="last time of the log [default: its last touchpoint]")
    parser.add_argument("--horizon-days", type=float, default=None, help="[default: the model's horizon]")
    parser.add_argument("--every-days", type=float, default=1.0, help="days between scoring times")
    parser.add_argument("--top-percent", type=float, default=5.0, help="call budget: share of customers called")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline and tie breaks")
    parser.add_argument("--mapping", default=None, help="CSV column mapping (TOML), as for `lam produce`")
    parser.add_argument("--truth", default=None, help="simulator truth file [default: EVENTS.truth.npz if present]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from streams import topics

    created = topics.ensure(settings)
    for name, partitions in (topics.required(settings) | topics.changelogs(settings)).items():
        print(f"{name}: {partitions} partitions ({'created' if name in created else 'exists'})")
    return 0


def _topics_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("create",), help="create the missing topics")


def _lag(settings: Settings, args: argparse.Namespace) -> int:
    from streams import lag

    measured = lag.measure(settings.bootstrap, args.group or settings.app_id, settings.lag_timeout)
    print(lag.as_json(measured) if args.json else lag.render(measured))
    return 0


def _lag_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", default=None, help="consumer group [default: the app id, --app-id]")
    parser.add_argument("--json", action="store_true", help="print JSON for programs instead of a table")


def _lag_exporter(settings: Settings, args: argparse.Namespace) -> int:
    from streams import lag

    lag.serve_exporter(settings.bootstrap, args.group or settings.app_id, settings.lag_exporter_port,
                       settings.lag_timeout)
    return 0


def _lag_exporter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group", default=None, help="consumer group [default: the app id, --app-id]")


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.app import serve

    serve(settings)
    return 0


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from bench.run import main

    return main(settings, args.quick, args.docs_dir, events=args.events, customers=args.customers,
                naive_events=args.naive_events, states=args.states, latency_seconds=args.latency_seconds,
                eager_latency_seconds=args.eager_latency_seconds, load_shares=args.load_shares,
                own_core=False if args.shared_cores else None)


def _bench_args(parser: argparse.ArgumentParser) -> None:
    def sizes(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated counts, got {text!r}") from None

    def shares(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(x) for x in text.split(",")) if text else ()
        except ValueError:
            values = None
        if values is None or not all(0 < v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"expected comma-separated shares between 0 and 1, got {text!r}")
        return values

    parser.add_argument("--events", type=int, help="touchpoints for the engine's throughput run [2000000]")
    parser.add_argument("--customers", type=int, help="customers of the simulated touchpoints [200000]")
    parser.add_argument("--naive-events", type=int, help="touchpoints for the naive design's run [100000]")
    parser.add_argument("--states", type=sizes, help="customer-state counts for the memory table "
                                                     "[100000,1000000,10000000]")
    parser.add_argument("--latency-seconds", type=float, help="seconds of touchpoints offered to measure latency "
                                                                "under the shipped policy [60]")
    parser.add_argument("--eager-latency-seconds", type=float, help="the same under the policy acting on every "
                                                                      "touchpoint (the stress figure) [30]")
    parser.add_argument("--load-shares", type=shares, help="shares of the engine's maximum rate at which its latency "
                        "is measured too, beside half of it (the load curve; '' for none) [0.2,0.3,0.4]")
    parser.add_argument("--shared-cores", action="store_true", help="in the latency phases, let the worker share "
                        "every core with the broker and the load generator [the worker on a core of its own]")
    parser.add_argument("--quick", action="store_true", help="small sizes for every unset flag (the smoke test)")
    parser.add_argument("--docs-dir", default=None, help="where benchmarks.md/.json go [docs/]")


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from bench.replay import main

    return main(settings, args)


def _replay_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", required=True, help="touchpoint log (JSON lines, or CSV with --mapping)")
    parser.add_argument("--mapping", default=None, help="CSV column mapping (TOML), as for `lam produce`")
    parser.add_argument("--dataset", required=True, help="name of the figures (docs sections, JSON key replay_NAME)")
    parser.add_argument("--horizon-days", type=float, default=None, help="[default: the model's horizon]")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="length of the latency phase")
    parser.add_argument("--docs-dir", default=None, help="where benchmarks.md/.json and model.md/.json go [docs/]")


COMMANDS: list[Command] = [
    Command("demo", "the system end to end: broker, topics, model, worker, live touchpoints, actions",
            tuple(dict.fromkeys(BROKER_FIELDS + WORKER_FIELDS)), _demo, _demo_args),
    Command("broker", "run the local single-node KRaft Kafka broker", BROKER_FIELDS, _broker, _broker_args),
    Command("smoke", "keyed produce/consume round trip through the broker", CLIENT_FIELDS, _smoke, _smoke_args),
    Command("topics", "create the input, consent, action and dead-letter topics", TOPIC_FIELDS, _topics, _topics_args),
    Command("worker", "run a streaming worker: touchpoints in, next-best actions out", WORKER_FIELDS, _worker),
    Command("train", "train the model on a touchpoint file and write its artifact", ("model_path",), _train,
            _train_args),
    Command("evaluate", "evaluate a model against baselines; write docs/model.md, model.json, lift PNG",
            ("model_path",), _evaluate, _evaluate_args),
    Command("simulate", "write a simulated touchpoint history and its ground truth", (), _simulate, _simulate_args),
    Command("produce", "stream touchpoints from a file or the simulator into the input topic",
            CLIENT_FIELDS + ("input_topic", "partitions"), _produce, _produce_args),
    Command("lag", "print the worker group's committed offset, log-end offset and lag per partition",
            CLIENT_FIELDS + ("app_id", "lag_timeout"), _lag, _lag_args),
    Command("lag-exporter", "serve the worker group's consumer lag as Prometheus metrics",
            CLIENT_FIELDS + ("app_id", "lag_timeout", "lag_exporter_port"), _lag_exporter, _lag_exporter_args),
    Command("bench", "throughput, latency and memory of the engine beside the naive design; writes docs/benchmarks.*",
            BENCH_FIELDS, _bench, _bench_args),
    Command("replay", "a real log through a worker: actions against what happened, throughput, latency",
            BENCH_FIELDS + ("policy_path",), _replay, _replay_args),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, not argparse's usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lam", description="LAM: a streaming next-best-action engine on Kafka and Faust.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    by_name = {f.name: f for f in fields(Settings)}
    defaults = Settings()
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        cmd.arguments(p)
        group = p.add_argument_group("settings (flag > environment variable > default)")
        for name in cmd.settings:
            f = by_name[name]
            group.add_argument(settings_mod.flag_name(name), dest=f"setting_{name}", default=argparse.SUPPRESS,
                               metavar="VALUE",
                               help=f"{f.metadata['help']} [{settings_mod.env_name(name)}; "
                                    f"default: {getattr(defaults, name)}]")
        p.set_defaults(command_obj=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        cmd: Command | None = getattr(args, "command_obj", None)
        if cmd is None:
            build_parser().print_help()
            return 2
        overrides = {k.removeprefix("setting_"): v for k, v in vars(args).items() if k.startswith("setting_")}
        settings = settings_mod.load(overrides)
        return cmd.run(settings, args)
    except UsageError as exc:
        print(f"lam: usage error: {exc}", file=sys.stderr)
        return 2
    except LamError as exc:
        print(f"lam: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
