"""What each CLI command does."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from daemon.build import describe_store
from daemon.cli import EX_CONFIG, EX_UNAVAILABLE, EX_USAGE, print_json, run_async
from daemon.config import Config, ConfigError, ConfigProblem, config_schema, load_config
from daemon.config_api import ApiConfig
from daemon.configbase import split_listen
from daemon.routes_cli import describe_action
from daemon.yamlsource import YamlSyntaxError, load_yaml

#: a token for the client commands, in place of one read from the configuration
TOKEN_ENV = "BACKCHANNEL_TOKEN"  # noqa: S105  (the variable's name, not a token)


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from daemon.app import serve
    from daemon.logs import configure_logging
    from daemon.store.migrations import SchemaTooNew

    config = _load(args)
    if config is None:
        return EX_CONFIG
    configure_logging()
    try:
        run_async(serve(config, args.config, systemd_env=os.environ))
    except SchemaTooNew as exc:
        # no restart mends it (the unit's RestartPreventExitStatus=78): this release must be upgraded
        print(f"{describe_store(config)}: {exc}", file=sys.stderr)
        return EX_CONFIG
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


class _Client:
    """The daemon's API as one of its tokens: BACKCHANNEL_TOKEN's (the configuration's secrets
    are then left unread: under systemd they are credentials only the service can read), the one
    ``--token-name`` names, or the first with the scope the command needs."""

    def __init__(self, args: argparse.Namespace, scope: str) -> None:
        given = os.environ.get(TOKEN_ENV)
        if given:
            self.token = given
            self.url = args.url or _api_url(*split_listen(_raw_listen(args.config)))
            return
        config = load_config(args.config)
        self.url = args.url or _api_url(config.api.host, config.api.port)
        self.token = _token(config, args.token_name, scope, str(args.config))

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(method, self.url + path, json=body, headers=headers, timeout=10)


def _api_url(host: str, port: int) -> str:
    host = host if host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def _raw_listen(path: Path) -> str:
    """``api.listen`` as written, without resolving any secret reference (nor validating the rest)."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8")).data
    except (OSError, UnicodeDecodeError, YamlSyntaxError) as exc:
        raise ConfigError([ConfigProblem(str(path), None, "api.listen", str(exc))]) from None
    api = data.get("api") if isinstance(data, dict) else None
    listen = api.get("listen") if isinstance(api, dict) else None
    return listen if isinstance(listen, str) else str(ApiConfig.model_fields["listen"].default)


def _token(config: Config, name: str | None, scope: str, where: str) -> str:
    tokens = config.api.tokens
    if name is not None:
        chosen = next((t for t in tokens if t.name == name), None)
        if chosen is None:
            problem = f"no token named {name!r} (tokens: {', '.join(t.name for t in tokens)})"
            raise ConfigError([ConfigProblem(where, None, "api.tokens", problem)])
        return chosen.token.get_secret_value()
    chosen = next((t for t in tokens if scope in t.scopes), None)
    if chosen is None:
        problem = f"no token has the {scope!r} scope this command needs"
        raise ConfigError([ConfigProblem(where, None, "api.tokens", problem)])
    return chosen.token.get_secret_value()


def _call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, *, scope: str = "read"
) -> dict[str, Any] | int:
    try:
        client = _Client(args, scope)
        response = client.request(method, path, body)
    except (ConfigError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    except httpx.InvalidURL as exc:  # not an httpx.HTTPError: a --url that does not parse
        print(f"bad API URL {client.url!r}: {exc}", file=sys.stderr)
        return EX_USAGE
    except httpx.HTTPError as exc:
        print(f"cannot reach the daemon: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    data = _answer(response)
    if data is None:
        kind = response.headers.get("content-type", "no content type")
        print(
            f"{client.url} is not backchannel's API: HTTP {response.status_code} ({kind}) "
            "instead of a JSON object; check --url or api.listen",
            file=sys.stderr,
        )
        return EX_UNAVAILABLE
    if response.is_error:
        print(f"{response.status_code}: {data.get('message', data)}", file=sys.stderr)
        return 1
    return data


def _answer(response: httpx.Response) -> dict[str, Any] | None:
    """The API's JSON object, or None for anything else (a proxy's error page, another service)."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


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
    for n in data.get("nodes", []):
        checks = ", ".join(f"{c['check']} {c['status']}" for c in n["checks"]) or "no recent checks"
        print(f"  node {n['node']} ({n['role']}): {checks}")
    for c in data.get("channels", []):
        health = "ok" if not c["consecutive_failures"] else f"{c['consecutive_failures']} failures in a row"
        error = f" (last error: {c['last_error']})" if c["consecutive_failures"] else ""
        print(f"  channel {c['channel']}: {health}; last success {c['last_success_at'] or '-'}{error}")
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
