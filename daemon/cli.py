"""The ``backchannel`` command line (also ``python -m daemon``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from daemon import __version__

EX_CONFIG = 78
EX_UNAVAILABLE = 69
EX_USAGE = 64
DEFAULT_CONFIG = Path("/etc/backchannel/backchannel.yaml")

# argparse's type for a parser's subcommands (generic only in typeshed, so a string here)
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader left early (``backchannel status | head``): no traceback, and none at exit
        # when Python flushes stdout again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backchannel", description="Communication failover daemon.")
    parser.add_argument("--version", action="version", version=f"backchannel {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    # in the order ``--help`` lists them
    _add_local_commands(sub)
    _add_client_commands(sub)
    _add_tools(sub)
    return parser


# The handlers are imported as the parser is built, not at the top: daemon.commands imports this module.


def _add_local_commands(sub: _Commands) -> None:
    """The daemon itself and the commands on its configuration file and store."""
    from daemon import commands

    _config_arg(_command(sub, "run", commands.run, "run the daemon in the foreground"))
    _config_arg(_command(sub, "check", commands.check, "validate a configuration file and summarise it"))
    _command(sub, "schema", commands.schema, "print the configuration's JSON Schema")
    _config_arg(_command(sub, "migrate", commands.migrate, "apply the store's pending schema migrations"))


def _add_client_commands(sub: _Commands) -> None:
    """The commands that ask a running daemon's API."""
    from daemon import commands

    status = _command(sub, "status", commands.status, "show the provider's state and the queue")
    _client_args(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    _add_send_args(_command(sub, "send", commands.send, "submit a notification"))
    help_ = "force the provider's state, or release the override"
    override = _command(sub, "override", commands.override, help_)
    _client_args(override)
    override.add_argument("state", choices=["outage", "healthy", "release"])
    override.add_argument("--reason", default="operator override from the CLI")
    help_ = "acknowledge a notification: the rest of its escalation is not sent"
    ack = _command(sub, "ack", commands.ack, help_)
    _client_args(ack)
    ack.add_argument("id", help="the notification id")
    ack.add_argument("--by", help="who acknowledges, for the delivery trail (default: $USER)")
    help_ = "send a test message through every backup channel, report each"
    _add_drill_args(_command(sub, "drill", commands.drill, help_))


def _add_send_args(send: argparse.ArgumentParser) -> None:
    _client_args(send)
    send.add_argument("--severity", default="info", choices=["critical", "high", "warning", "info"])
    send.add_argument("--subject", required=True)
    send.add_argument("--body", default="")
    send.add_argument("--to", action="append", default=[], help="recipient email (repeatable)")
    send.add_argument("--label", action="append", default=[], type=_label, help="KEY=VALUE (repeatable)")
    send.add_argument("--idempotency-key")


def _add_drill_args(drill: argparse.ArgumentParser) -> None:
    _client_args(drill)
    drill.add_argument(
        "--route", action="append", dest="routes", help="only this route's channels (repeatable)"
    )
    drill.add_argument("--no-wait", action="store_true", help="start the drill and print its id only")
    drill.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every result")


def _add_tools(sub: _Commands) -> None:
    """The operator's tools: a password hash for SMTP intake, the routing policy, the demo."""
    from daemon import commands

    help_ = "hash a password for intake.smtp.users (reads stdin)"
    _command(sub, "hash-password", commands.hash_password, help_)
    _add_routes(sub)
    demo = _command(sub, "demo", commands.demo, "run a self-contained failover and recovery demonstration")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")


def _add_routes(sub: _Commands) -> None:
    """``routes test`` and ``routes show``: a command group with an action each."""
    from daemon import routes_cli

    routes = sub.add_parser(
        "routes", help="test and draw the routing policy", description="test and draw the routing policy"
    )
    routes_sub = routes.add_subparsers(required=True, metavar="ACTION")
    test = routes_sub.add_parser("test", help="which route and plan a notification would get")
    _config_arg(test)
    routes_cli.add_arguments(test)
    test.set_defaults(handler=routes_cli.routes_test)
    show = routes_sub.add_parser("show", help="draw the route tree")
    _config_arg(show)
    show.set_defaults(handler=routes_cli.routes_show)


def _command(
    sub: _Commands, name: str, handler: Callable[[argparse.Namespace], int], help_: str
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` opens with its one-line summary, run by ``handler``."""
    p = sub.add_parser(name, help=help_, description=help_)
    p.set_defaults(handler=handler)
    return p


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML configuration file")


def _client_args(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--url", help="API base URL (default: from the configuration's api.listen)")
    p.add_argument(
        "--token-name",
        help="which of api.tokens to use (default: the first with the scope the command needs); "
        "BACKCHANNEL_TOKEN in the environment gives the token itself, and the configuration's "
        "secrets are then not read",
    )


def run_async(coro: object) -> None:
    """Run on uvloop when it is installed (faster HTTP intake), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    uvloop.run(coro)  # type: ignore[arg-type]


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _label(text: str) -> tuple[str, str]:
    """``--label KEY=VALUE``; argparse's usage error for anything else (it was dropped unsaid)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value
