"""The configuration: loading, validation, every problem at once with its line, schema export."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import Config, ConfigError, ConfigProblem, config_schema, load_config, parse_config
from daemon.config_channels import EmailChannelConfig, WebhookChannelConfig
from daemon.configbase import format_duration, parse_duration
from daemon.core.model import Severity
from daemon.core.routing import Matcher, Route

REPO = Path(__file__).resolve().parents[2]
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {"API_TOKEN": "tok-0123456789abcdef", "SMTP_PASSWORD": "hunter2-smtp", "WEBHOOK_SECRET": HOOK_SECRET}

FULL = """\
store: {path: /tmp/backchannel.db}
api:
  listen: 127.0.0.1:8025
  tokens: [{name: ci, token: "${API_TOKEN}"}]
provider:
  name: exchange-online
  smtp: {host: smtp.example.com, port: 587, username: ops@example.com, password: "${SMTP_PASSWORD}"}
  checks:
    - {type: smtp, every: 15s, timeout: 10s}
  failure_threshold: 4
  success_threshold: 2
channels:
  email: {type: email, to: [oncall@example.com]}
  incident: {type: webhook, url: "https://hooks.example.com/x", secret: "${WEBHOOK_SECRET}"}
routes:
  - name: critical
    match: {severity: [critical, high]}
    healthy: [email]
    outage: [incident, email]
  - match: {}
    healthy: [email]
    outage: defer
dispatch:
  retry: {initial: 500ms, max: 1m, multiplier: 3, max_attempts: 5}
  poll: 250ms
"""


def base() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(FULL)
    return data


def problems_of(data: dict[str, Any] | str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="t.yaml", env=ENV if env is None else env)
    return caught.value.problems


def test_full_config_loads_into_typed_models() -> None:
    """Every section of a complete file lands in its typed field."""
    config = parse_config(FULL, env=ENV)
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8025)
    assert config.api_tokens() == {"ci": "tok-0123456789abcdef"}
    assert config.provider.smtp.password is not None
    assert config.provider.smtp.password.get_secret_value() == "hunter2-smtp"
    assert config.provider.mail_from == "ops@example.com"
    assert config.provider.checks[0].every == timedelta(seconds=15)
    assert (config.provider.failure_threshold, config.provider.success_threshold) == (4, 2)
    assert isinstance(config.channels["email"], EmailChannelConfig)
    assert isinstance(config.channels["incident"], WebhookChannelConfig)
    assert config.dispatch.retry.initial == timedelta(milliseconds=500)
    assert config.dispatch.poll == timedelta(milliseconds=250)


def test_policy_converts_routes_to_core_routes() -> None:
    """Routes become the core's Route/Matcher; defer becomes None; unnamed routes get route-<index>."""
    routes = parse_config(FULL, env=ENV).policy()
    assert routes == (
        Route(
            "critical",
            Matcher(severities=frozenset({Severity.CRITICAL, Severity.HIGH})),
            ("email",),
            ("incident", "email"),
        ),
        Route("route-1", Matcher(), ("email",), None),
    )


def test_omitted_sections_take_their_defaults() -> None:
    """Checks, dispatch, concurrency, timeouts and api limits default as documented."""
    data = base()
    del data["provider"]["checks"], data["dispatch"]
    config = parse_config(yaml.safe_dump(data), env=ENV)
    (check,) = config.provider.checks
    assert (check.type, check.every, check.timeout, check.smtp) == (
        "smtp",
        timedelta(seconds=15),
        timedelta(seconds=10),
        None,
    )
    assert config.dispatch.retry.max == timedelta(minutes=5)
    assert (config.dispatch.concurrency, config.dispatch.lease) == (None, timedelta(minutes=5))
    assert (config.channels["email"].concurrency, config.channels["incident"].concurrency) == (4, 16)
    assert config.api.max_body_bytes == 1024 * 1024
    assert config.store.busy_timeout == timedelta(seconds=5)


def test_http_limits_default_as_documented() -> None:
    """512 connections a process; bodies still arriving: 8 times the largest body, which follows it."""
    config = parse_config(FULL, env=ENV)
    assert (config.api.max_connections, config.api.buffered_body_limit) == (512, 128 * 1024 * 1024)
    raised = parse_config(yaml.safe_dump(edit("api.max_alert_body_bytes", 32 * 1024 * 1024)), env=ENV)
    assert raised.api.buffered_body_limit == 256 * 1024 * 1024
    given = parse_config(yaml.safe_dump(edit("api.max_buffered_body_bytes", 20_000_000)), env=ENV)
    assert given.api.buffered_body_limit == 20_000_000


def test_a_buffered_body_limit_below_the_largest_body_is_named_at_its_line() -> None:
    """FILE:LINE: api.max_buffered_body_bytes, the line of that key, not of api."""
    text = FULL.replace(
        "  listen: 127.0.0.1:8025\n", "  listen: 127.0.0.1:8025\n  max_buffered_body_bytes: 4096\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="/etc/bc.yaml", env=ENV)
    assert str(caught.value).startswith("/etc/bc.yaml:4: api.max_buffered_body_bytes: must be at least")


def test_top_level_x_keys_hold_reusable_anchors() -> None:
    """Top-level x-* keys are ignored, so they can define anchors and merge keys."""
    text = "x-retry: &retry {initial: 2s, max: 1m}\n" + FULL.replace(
        "  email: {type: email, to: [oncall@example.com]}",
        "  email: {type: email, retry: {<<: *retry, max_attempts: 3}}",
    )
    retry = parse_config(text, env=ENV).channels["email"].retry
    assert retry is not None
    assert (retry.initial, retry.max, retry.max_attempts) == (timedelta(seconds=2), timedelta(minutes=1), 3)


def test_dispatch_concurrency_is_the_default_for_channels() -> None:
    """A channel without its own concurrency takes dispatch.concurrency."""
    data = base()
    data["dispatch"]["concurrency"] = 9
    data["channels"]["incident"]["concurrency"] = 2
    config = parse_config(yaml.safe_dump(data), env=ENV)
    assert (config.channels["email"].concurrency, config.channels["incident"].concurrency) == (9, 2)


def test_implicit_tls_defaults_to_port_465_without_starttls() -> None:
    """`tls: true` alone means SMTPS on 465, not a conflict with the starttls default."""
    data = base()
    data["provider"]["smtp"] = {"host": "smtp.example.com", "tls": True}
    data["provider"]["mail_from"] = "ops@example.com"
    smtp = parse_config(yaml.safe_dump(data), env=ENV).provider.smtp
    assert (smtp.tls, smtp.starttls, smtp.port) == (True, False, 465)


@pytest.mark.parametrize(("every", "timeout"), [("2s", 1.0), ("10s", 5.0), ("15s", 10.0), ("1m", 10.0)])
def test_omitted_check_timeout_fits_inside_every(every: str, timeout: float) -> None:
    """Without a timeout a check waits 10s, or half its interval when 10s would not fit."""
    data = edit("provider.checks", [{"type": "smtp", "every": every}])
    (check,) = parse_config(yaml.safe_dump(data), env=ENV).provider.checks
    assert check.timeout == timedelta(seconds=timeout)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:8025", "127.0.0.1", 8025), ("[::1]:9000", "::1", 9000), ("localhost:0", "localhost", 0)],
)
def test_listen_is_split_into_host_and_port(listen: str, host: str, port: int) -> None:
    """api.listen accepts host:port and bracketed IPv6."""
    data = base()
    data["api"]["listen"] = listen
    api = parse_config(yaml.safe_dump(data), env=ENV).api
    assert (api.host, api.port) == (host, port)


def edit(path: str, value: Any) -> dict[str, Any]:
    """The base config with the value at dotted ``path`` replaced (``...`` deletes it)."""
    data = copy.deepcopy(base())
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = data
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (edit("store.busy_timout", "5s"), "store.busy_timout", "unknown key 'busy_timout'"),
        (edit("routes.0.outage", ["incident", "sms"]), "routes[0].outage[1]", "unknown channel 'sms'"),
        (edit("routes.0.healthy", "later"), "routes[0].healthy", "list of channel names or 'defer'"),
        (
            edit("routes.1.match", {"severity": ["info"]}),
            "routes",
            "last route (routes[1]) must be a catch-all",
        ),
        (edit("routes.0.match", {}), "routes", "routes[0] matches everything"),
        (edit("dispatch.poll", "5 minutes"), "dispatch.poll", "invalid duration '5 minutes'"),
        (edit("dispatch.lease", "0s"), "dispatch.lease", "must be positive"),
        (edit("provider.checks.0.timeout", "15s"), "provider.checks[0].timeout", "shorter than every (15s)"),
        (edit("provider.checks.0.type", "ping"), "provider.checks[0]", "'ping'"),
        (
            edit("provider.smtp", {"host": "h", "tls": True, "starttls": True}),
            "provider.smtp",
            "starttls and tls are exclusive",
        ),
        (edit("provider.smtp.password", ...), "provider.smtp", "username goes with a password or oauth2"),
        (edit("provider.failure_threshold", 0), "provider.failure_threshold", "greater than or equal to 1"),
        (edit("provider.name", ...), "provider.name", "required"),
        (edit("api.tokens", []), "api.tokens", "at least 1"),
        (edit("api.listen", "::1:80"), "api.listen", "in brackets"),
        (edit("api.listen", "localhost"), "api.listen", "expected host:port"),
        (edit("api.max_connections", 0), "api.max_connections", "greater than or equal to 1"),
        (edit("api.max_connections", "many"), "api.max_connections", "valid integer"),
        (
            edit("api.max_buffered_body_bytes", 1024 * 1024),
            "api.max_buffered_body_bytes",
            "must be at least the largest body a request may send (16777216",
        ),
        (edit("channels.incident.url", "ftp://hooks"), "channels.incident.url", "http:// or https://"),
        (edit("channels.incident.secret", "whsec_c2hvcnQ="), "channels.incident.secret", "at least 16 bytes"),
        (edit("channels.incident.secret", "not base64!"), "channels.incident.secret", "expected base64"),
        (edit("channels.incident.type", "pager"), "channels.incident", "'pager'"),
        (edit("channels.incident.type", ...), "channels.incident", "needs a 'type'"),
        (edit("channels.email.to", ["oncall"]), "channels.email.to[0]", "email address"),
        (edit("channels.Email", {"type": "email"}), "channels.Email", "lowercase"),
        (edit("dispatch.retry.initial", "10m"), "dispatch.retry", "initial must not exceed max"),
        (edit("routes.0.match.severity", ["urgent"]), "routes[0].match.severity[0]", "'critical', 'high'"),
    ],
)
def test_invalid_config_names_the_path_and_problem(data: dict[str, Any], path: str, message: str) -> None:
    """Each kind of mistake is reported at its dotted path with a useful message."""
    problems = problems_of(data)
    assert [(p.path, message in p.message) for p in problems] == [(path, True)], problems


def test_several_problems_are_reported_at_once_with_their_lines() -> None:
    """All problems come back together, each at the line of the offending key."""
    text = FULL.replace("busy_timeout", "busy_timeout").replace(
        "store: {path: /tmp/backchannel.db}", "store: {path: /tmp/backchannel.db, bogus: 1}"
    )
    text = text.replace("  failure_threshold: 4", "  failure_threshold: zero")
    text = text.replace("outage: [incident, email]", "outage: [incident, pager]")
    text = text.replace("  poll: 250ms", "  poll: soon")
    found = [(p.line, p.path) for p in problems_of(text)]
    assert found == [
        (1, "store.bogus"),
        (10, "provider.failure_threshold"),
        (19, "routes[0].outage[1]"),
        (25, "dispatch.poll"),
    ]


def test_error_text_is_one_line_per_problem() -> None:
    """str(ConfigError) is FILE:LINE: path: message, one line per problem."""
    text = FULL.replace("  poll: 250ms", "  poll: soon").replace(
        "failure_threshold: 4", "failure_threshold: -1"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="/etc/bc.yaml", env=ENV)
    lines = str(caught.value).splitlines()
    assert (
        lines[0] == "/etc/bc.yaml:10: provider.failure_threshold: Input should be greater than or equal to 1"
    )
    assert lines[1].startswith("/etc/bc.yaml:25: dispatch.poll: invalid duration 'soon'")
    assert len(lines) == 2


def test_duplicate_key_is_a_problem() -> None:
    """A key given twice in one mapping is reported, not silently overwritten."""
    text = FULL.replace("  success_threshold: 2\n", "  success_threshold: 2\n  success_threshold: 5\n")
    assert [(p.line, p.path, p.message) for p in problems_of(text)] == [
        (12, "provider.success_threshold", "duplicate key 'success_threshold'")
    ]


def test_yaml_syntax_error_names_file_and_line() -> None:
    """Broken YAML is a ConfigError at the line where parsing failed."""
    text = FULL.replace("  name: exchange-online", "  name: [exchange-online")
    (problem,) = problems_of(text)
    assert problem.file == "t.yaml"
    assert problem.line is not None and 6 <= problem.line <= 8
    assert problem.message.startswith("YAML syntax error")


@pytest.mark.parametrize(
    ("text", "found"), [("", "an empty file"), ("- a\n- b\n", "a list"), ("hello\n", "a str")]
)
def test_document_that_is_not_a_mapping_is_rejected(text: str, found: str) -> None:
    """The top level must be a mapping."""
    (problem,) = problems_of(text)
    assert problem.message == f"expected a mapping, found {found}"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that cannot be read is a ConfigError naming the file."""
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml", env=ENV)
    assert str(caught.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read the configuration:")


def test_load_config_reads_the_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit env, references resolve against os.environ."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "bc.yaml"
    path.write_text(FULL)
    assert load_config(path).api_tokens() == {"ci": ENV["API_TOKEN"]}


def test_example_configuration_loads(tmp_path: Path) -> None:
    """deploy/backchannel.example.yaml is complete and valid once its secrets exist."""
    (tmp_path / "alertmanager-token").write_text("am-token-0123456789\n")
    env = {**ENV, "BACKCHANNEL_API_TOKEN": "api-token-0123456789", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    config = load_config(REPO / "deploy" / "backchannel.example.yaml", env=env)
    assert config.api_tokens() == {"ci": "api-token-0123456789", "alertmanager": "am-token-0123456789"}
    assert [route.name for route in config.policy()] == ["critical", "deploys", "everything-else"]


def test_secrets_stay_hidden_in_reprs() -> None:
    """Secret fields never show their value when the config is printed."""
    shown = repr(parse_config(FULL, env=ENV))
    assert all(secret not in shown for secret in ENV.values())


def test_config_is_frozen() -> None:
    """Models cannot be changed after validation."""
    config = parse_config(FULL, env=ENV)
    with pytest.raises(ValueError, match="frozen"):
        config.provider.failure_threshold = 1  # type: ignore[misc]


def test_schema_is_json_schema_for_editors() -> None:
    """The exported schema is JSON, describes every section and shows durations as strings."""
    schema = json.loads(json.dumps(config_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == {
        "store",
        "api",
        "provider",
        "channels",
        "routes",
        "dispatch",
        "drills",
        "intake",
        "windows",
        "directory",
    }
    every = schema["$defs"]["SmtpCheckConfig"]["properties"]["every"]
    assert (every["type"], every["default"]) == ("string", "15s")
    # docs/configuration.md: none; each channel kind has its own default
    assert schema["$defs"]["DispatchConfig"]["properties"]["concurrency"]["default"] is None
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("15s", 15),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("20", 20),
        (7, 7),
        (0.25, 0.25),
        (" 2m ", 120),
    ],
)
def test_parse_duration_reads_units(text: str | int | float, seconds: float) -> None:
    """Units ms/s/m/h/d combine; a bare number is seconds."""
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5 minutes", "1w", "m5", "-5s", "1h-30m", "ten", True, float("nan")])
def test_parse_duration_rejects_nonsense(text: str | float) -> None:
    """Anything else is a ValueError."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["500ms", "15s", "5m", "1h30m", "1d", "1d2h3m4s5ms"])
def test_format_duration_round_trips(text: str) -> None:
    """format_duration writes the shortest text parse_duration reads back."""
    assert format_duration(parse_duration(text)) == text


def test_config_type_is_exported() -> None:
    """parse_config returns the public Config model."""
    assert isinstance(parse_config(FULL, env=ENV), Config)


def test_documented_example_matches_the_deploy_example() -> None:
    """docs/configuration.md shows the same complete example as deploy/backchannel.example.yaml."""
    docs = (REPO / "docs" / "configuration.md").read_text()
    block = docs.split("## Complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    example = (REPO / "deploy" / "backchannel.example.yaml").read_text()
    assert yaml.safe_load(block) == yaml.safe_load(example)
