"""The ``backchannel`` command line (also ``python -m daemon``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon import __version__

EX_CONFIG = 78
EX_UNAVAILABLE = 69
DEFAULT_CONFIG = Path("/etc/backchannel/backchannel.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backchannel", description="Communication failover daemon.")
    parser.add_argument("--version", action="version", version=f"backchannel {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML configuration file")

    def client_args(p: argparse.ArgumentParser) -> None:
        config_arg(p)
        p.add_argument("--url", help="API base URL (default: from the configuration's api.listen)")

    from daemon import commands, routes_cli

    config_arg(command("run", commands.run, "run the daemon in the foreground"))
    config_arg(command("check", commands.check, "validate a configuration file and summarise it"))
    command("schema", commands.schema, "print the configuration's JSON Schema")
    config_arg(command("migrate", commands.migrate, "apply the store's pending schema migrations"))
    status = command("status", commands.status, "show the provider's state and the queue")
    client_args(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    send = command("send", commands.send, "submit a notification")
    client_args(send)
    send.add_argument("--severity", default="info", choices=["critical", "high", "warning", "info"])
    send.add_argument("--subject", required=True)
    send.add_argument("--body", default="")
    send.add_argument("--to", action="append", default=[], help="recipient email (repeatable)")
    send.add_argument("--label", action="append", default=[], help="KEY=VALUE (repeatable)")
    send.add_argument("--idempotency-key")
    override = command("override", commands.override, "force the provider's state, or release the override")
    client_args(override)
    override.add_argument("state", choices=["outage", "healthy", "release"])
    override.add_argument("--reason", default="operator override from the CLI")
    ack = command("ack", commands.ack, "acknowledge a notification: the rest of its escalation is not sent")
    client_args(ack)
    ack.add_argument("id", help="the notification id")
    ack.add_argument("--by", help="who acknowledges, for the delivery trail (default: $USER)")
    drill = command("drill", commands.drill, "send a test message through every backup channel, report each")
    client_args(drill)
    drill.add_argument(
        "--route", action="append", dest="routes", help="only this route's channels (repeatable)"
    )
    drill.add_argument("--no-wait", action="store_true", help="start the drill and print its id only")
    drill.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for every result")
    command("hash-password", commands.hash_password, "hash a password for intake.smtp.users (reads stdin)")
    routes = sub.add_parser(
        "routes", help="test and draw the routing policy", description="test and draw the routing policy"
    )
    routes_sub = routes.add_subparsers(required=True, metavar="ACTION")
    test = routes_sub.add_parser("test", help="which route and plan a notification would get")
    config_arg(test)
    routes_cli.add_arguments(test)
    test.set_defaults(handler=routes_cli.routes_test)
    show = routes_sub.add_parser("show", help="draw the route tree")
    config_arg(show)
    show.set_defaults(handler=routes_cli.routes_show)
    demo = command("demo", commands.demo, "run a self-contained failover and recovery demonstration")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")
    return parser


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
