"""The client commands' way to a running daemon: its API's URL, the token to use, and one call
whose failure is already told on stderr and turned into the exit code.

The URL is ``--url``, else ``api.listen`` of the configuration (a wildcard address asked on
loopback); the token is ``BACKCHANNEL_TOKEN``'s, else one of the configuration's. The commands
that use it are :mod:`daemon.commands`'.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from daemon.cli import EX_CONFIG, EX_UNAVAILABLE, EX_USAGE
from daemon.config import Config, ConfigError, ConfigProblem, load_config
from daemon.config_api import ApiConfig
from daemon.configbase import split_listen
from daemon.yamlsource import YamlSyntaxError, load_yaml

#: a token for the client commands, in place of one read from the configuration
TOKEN_ENV = "BACKCHANNEL_TOKEN"  # noqa: S105  (the variable's name, not a token)


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
        print(f"cannot reach the daemon at {client.url}: {exc}", file=sys.stderr)
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
