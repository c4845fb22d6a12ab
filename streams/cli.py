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
    from deploy import broker
    from streams.smoke import roundtrip

    print(broker.start(settings))
    print(roundtrip(settings))
    return 0


COMMANDS: list[Command] = [
    Command("demo", "start the local broker and run the system end to end", BROKER_FIELDS + CLIENT_FIELDS[1:], _demo),
    Command("broker", "run the local single-node KRaft Kafka broker", BROKER_FIELDS, _broker, _broker_args),
    Command("smoke", "keyed produce/consume round trip through the broker", CLIENT_FIELDS, _smoke, _smoke_args),
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
