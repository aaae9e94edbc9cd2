"""What each CLI command does."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time

from daemon.api_client import _call
from daemon.build import describe_store
from daemon.cli import EX_CONFIG, EX_UNAVAILABLE, print_json, run_async
from daemon.config import Config, ConfigError, config_schema, load_config
from daemon.routes_cli import describe_action


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from daemon.api.serving import ListenError
    from daemon.app import serve
    from daemon.logs import configure_logging
    from daemon.node_name import NodeNameInUse
    from daemon.store.migrations import SchemaTooNew

    config = _load(args)
    if config is None:
        return EX_CONFIG
    configure_logging()
    try:
        run_async(serve(config, args.config, systemd_env=os.environ))
    except (SchemaTooNew, NodeNameInUse) as exc:
        # no restart mends it (the unit's RestartPreventExitStatus=78): this release must be
        # upgraded, or this node given a name of its own
        print(f"{describe_store(config)}: {exc}", file=sys.stderr)
        return EX_CONFIG
    except ListenError as exc:
        # another process holds the port (often a second daemon): a restart may find it free
        print(exc.strerror, file=sys.stderr)
        return 1
    return 0


def check(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EX_CONFIG
    p = config.provider
    print(f"{args.config}: OK")
    print(f"  store:    {describe_store(config)}")
    print(f"  api:      {config.api.host}:{config.api.port} ({len(config.api.tokens)} token(s))")
    print(
        f"  provider: {p.name} via {p.smtp.host}:{p.smtp.port}, outage after {p.failure_threshold} "
        f"failed checks, recovery after {p.success_threshold} good ones"
    )
    for c in p.checks:
        print(
            f"    check {c.name or c.type}: every {c.every.total_seconds():g}s, "
            f"timeout {c.timeout.total_seconds():g}s"
        )
    print(f"  channels: {', '.join(f'{name} ({c.type})' for name, c in config.channels.items())}")
    for route in config.policy():
        healthy, outage = describe_action(route.healthy), describe_action(route.outage)
        print(f"  route {route.name}: healthy -> {healthy}; outage -> {outage}")
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Apply pending schema migrations (the daemon also does at start); print what was applied."""
    from daemon.build import register_secrets
    from daemon.logs import redact
    from daemon.store import migrations
    from daemon.store.base import StoreError
    from daemon.store.postgres import PostgresStore, PostgresStoreConfig

    config = _load(args)
    if config is None:
        return EX_CONFIG
    register_secrets(config)  # libpq's errors may quote the store URL's password
    store = config.store
    try:
        if isinstance(store, PostgresStoreConfig):
            applied = asyncio.run(PostgresStore.from_config(store).migrate())
        else:
            applied = migrations.migrate_sqlite(store.path)
    except (
        StoreError,
        sqlite3.Error,
        OSError,
    ) as exc:  # a locked or read-only file, a directory it cannot make
        print(f"migration failed: {redact(str(exc))}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(f"{describe_store(config)}: " + (f"applied {applied}" if applied else "schema up to date"))
    return 0


def schema(_: argparse.Namespace) -> int:
    print_json(config_schema())
    return 0


def status(args: argparse.Namespace) -> int:
    data = _call(args, "GET", "/v1/status")
    if isinstance(data, int):
        return data
    if args.json:
        print_json(data)
        return 0
    p, q = data["provider"], data["queue"]
    store = data.get("store") or {"state": "ok"}  # a daemon of an earlier release says nothing
    if store["state"] != "ok":
        print(
            f"store: UNAVAILABLE since {store['since']}: {store['reason']} (intake and /healthz answer 503)"
        )
    forced = f" (forced: {p['forced']['reason']})" if p["forced"] else ""
    print(
        f"provider {p['name']}: {p['state'].upper()}{forced} since {p['since'] or 'start'}; "
        f"routing: {p['mode']}"
    )
    print(f"  consecutive failures {p['consecutive_failures']}, successes {p['consecutive_successes']}")
    for line in data.get("explain", {}).get("why", []):
        print(f"  why: {line}")
    for c in p["checks"][:5]:
        print(f"  check {c['at']} {c['check']}: {c['status']} ({c['reason']}) {c['latency_s'] * 1000:.0f} ms")
    for e in p["events"][:5]:
        print(f"  event {e['at']} {e['from']} -> {e['to']}: {e['cause']}")
    for n in data.get("nodes") or []:
        checks = ", ".join(f"{c['check']} {c['status']}" for c in n["checks"]) or "no recent checks"
        print(f"  node {n['node']} ({n['role']}): {checks}")
    for c in data.get("channels") or []:
        health = "ok" if not c["consecutive_failures"] else f"{c['consecutive_failures']} failures in a row"
        error = f" (last error: {c['last_error']})" if c["consecutive_failures"] else ""
        print(f"  channel {c['channel']}: {health}; last success {c['last_success_at'] or '-'}{error}")
    if q is None:
        print("queue: unknown (the store cannot be read)")
        return 0
    print(
        f"queue: notifications {json.dumps(q['notifications'])}, deliveries {json.dumps(q['deliveries'])}, "
        f"sending now {q['sending_now']}, oldest pending {q['oldest_pending_at'] or '-'}"
    )
    return 0


def send(args: argparse.Namespace) -> int:
    labels = dict(args.label)
    body = {
        "severity": args.severity,
        "subject": args.subject,
        "body": args.body,
        "recipients": args.to,
        "labels": labels,
        "source": "cli",
    }
    if args.idempotency_key:
        body["idempotency_key"] = args.idempotency_key
    data = _call(args, "POST", "/v1/notifications", body, scope="send")
    if isinstance(data, int):
        return data
    print(data["id"])
    return 0


def override(args: argparse.Namespace) -> int:
    if args.state == "release":
        data = _call(args, "DELETE", "/v1/provider/override", scope="admin")
    else:
        data = _call(
            args, "POST", "/v1/provider/override", {"state": args.state, "reason": args.reason}, scope="admin"
        )
    if isinstance(data, int):
        return data
    print(f"provider state: {data['state']}")
    return 0


def ack(args: argparse.Namespace) -> int:
    """Acknowledge a notification by id: the steps of its escalation not yet sent are not sent."""
    by = args.by or os.environ.get("USER") or None
    data = _call(args, "POST", f"/v1/notifications/{args.id}/ack", {"by": by} if by else None, scope="admin")
    if isinstance(data, int):
        return data
    done = "acknowledged" if data["result"] == "acknowledged" else "was already acknowledged"
    print(f"{data['id']} {done}")
    return 0


def drill(args: argparse.Namespace) -> int:
    started = _call(
        args, "POST", "/v1/drills", {"routes": args.routes} if args.routes else None, scope="admin"
    )
    if isinstance(started, int):
        return started
    drill_id = started["drill"]
    print(f"drill {drill_id} started on: {', '.join(started['notifications'])}")
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while True:
        result = _call(args, "GET", f"/v1/drills/{drill_id}")
        if isinstance(result, int):
            return result
        if result["done"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for c in result["channels"]:
        confirmed = " (vendor confirmed)" if c["confirmed"] else ""
        detail = f": {c['detail']}" if c["detail"] else ""
        print(f"  {c['channel']}: {c['status']}{confirmed}{detail}")
    print("drill passed" if result["ok"] else "drill FAILED")
    return 0 if result["ok"] else 1


def hash_password(_: argparse.Namespace) -> int:
    """Never from argv (it would show in ps and shell history): a prompt on a terminal, else stdin."""
    import getpass

    from daemon.intake.smtp_auth import hash_password as scrypt_hash

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(scrypt_hash(password))
    return 0


def demo(args: argparse.Namespace) -> int:
    from daemon.demo import run_demo

    return run_demo(keep=args.keep)
