"""The configuration: one YAML file, validated once into frozen pydantic models.

Exceptions::

    ConfigError     the file is unusable; ``problems`` holds every problem found at once,
                    each with file, line, dotted path (``routes[2].outage[0]``) and message

Loading resolves secret references (:mod:`daemon.secrets`) and keeps the line of every value
(:mod:`daemon.yamlsource`). This module and :mod:`daemon.secrets` are the only readers of the
environment. Field reference: ``docs/configuration.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import ErrorDetails

from daemon.config_api import ApiConfig, require_unique
from daemon.config_channels import ChannelConfig, ChannelName, EmailChannelConfig
from daemon.config_directory import DirectoryConfig
from daemon.config_provider import ProviderConfig
from daemon.config_routes import RouteConfig, WindowConfig, build_policy, route_templates
from daemon.config_store import StoreConfig
from daemon.configbase import (
    Duration,
    LocatedError,
    Model,
    PositiveInt,
    RetryConfig,
    format_duration,
)
from daemon.core.routing import Route, walk
from daemon.intake.smtp_config import SmtpIntakeConfig
from daemon.intake.webhook_config import AlertmanagerIntakeConfig, GrafanaIntakeConfig
from daemon.intake.workers_config import IntakeWorkersConfig
from daemon.message_templates import MessageTemplate
from daemon.secrets import SecretResolver
from daemon.yamlsource import Loc, SourceProblem, YamlDocument, YamlSyntaxError, format_path, load_yaml

# --- routes, dispatch, the whole -------------------------------------------------------------


class DispatchConfig(Model):
    retry: RetryConfig = Field(default_factory=RetryConfig)
    #: the default of channels that set none (filled in by Config); unset, each kind's own default
    concurrency: PositiveInt | None = None
    poll: Duration = timedelta(seconds=1)
    lease: Duration = timedelta(minutes=5)


class IntakeConfig(Model):
    """Ways in besides the HTTP API: the SMTP smart host (off unless configured), and how the
    always-served Alertmanager and Grafana webhooks map alerts to notifications."""

    smtp: SmtpIntakeConfig | None = None
    alertmanager: AlertmanagerIntakeConfig = Field(default_factory=AlertmanagerIntakeConfig)
    grafana: GrafanaIntakeConfig = Field(default_factory=GrafanaIntakeConfig)
    #: processes serving only the HTTP intake endpoints on a port of their own (off unless configured)
    workers: IntakeWorkersConfig | None = None


def _crontab(value: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(f"not a crontab expression (minute hour day month weekday): {exc}") from None
    return value


class DrillConfig(Model):
    """A scheduled failover drill, e.g. monthly: ``schedule: "0 10 1 * *"`` (10:00 UTC on the 1st)."""

    schedule: Annotated[str, AfterValidator(_crontab)]
    #: route names whose backup channels are drilled; all routes when omitted
    routes: list[str] | None = Field(None, min_length=1)


@dataclass(frozen=True)
class ConfigSource:
    text: str
    filename: str
    #: the variables ``${...}`` were resolved from, when not the process's environment
    env: dict[str, str] | None = None


class Config(Model):
    store: StoreConfig
    api: ApiConfig
    provider: ProviderConfig
    channels: dict[ChannelName, ChannelConfig] = Field(min_length=1)
    routes: list[RouteConfig] = Field(min_length=1)
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
    drills: DrillConfig | None = None
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    windows: dict[str, WindowConfig] = Field(default_factory=dict)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    _source: ConfigSource | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _default_concurrency(cls, data: Any) -> Any:
        """``dispatch.concurrency`` is the default for channels that set none."""
        dispatch = data.get("dispatch") if isinstance(data, dict) else None
        channels = data.get("channels") if isinstance(data, dict) else None
        cap = dispatch.get("concurrency") if isinstance(dispatch, dict) else None
        if not isinstance(channels, dict) or not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            return data
        filled = {k: {"concurrency": cap, **v} if isinstance(v, dict) else v for k, v in channels.items()}
        return {**data, "channels": filled}

    @field_validator("routes")
    @classmethod
    def _nothing_unplanned(cls, routes: list[RouteConfig]) -> list[RouteConfig]:
        *firsts, last = routes
        if not last.match.matcher().is_catch_all:
            raise ValueError(
                f"the last route (routes[{len(firsts)}]) must be a catch-all with an empty match"
            )
        for index, route in enumerate(firsts):
            # one with windows matches everything only inside (or outside) them: the rest apply then
            windowed = route.active_in or route.muted_in
            if route.match.matcher().is_catch_all and not windowed:
                raise ValueError(f"routes[{index}] matches everything, so the routes after it never apply")
        require_unique([r.name for r in routes if r.name], "route name")
        return routes

    @model_validator(mode="after")
    def _drilled_routes_exist(self) -> Config:
        if self.drills is not None and self.drills.routes is not None:
            known = {route.name for _, route in walk(self.policy())}
            unknown = sorted(set(self.drills.routes) - known)
            if unknown:
                raise LocatedError(f"unknown routes: {', '.join(unknown)}", ("drills", "routes"))
        return self

    @model_validator(mode="after")
    def _listeners_differ(self) -> Config:
        workers = self.intake.workers
        same = workers is not None and (workers.host, workers.port) == (self.api.host, self.api.port)
        if same and self.api.port != 0:  # port 0: each gets a free port of its own
            raise LocatedError("must differ from api.listen", ("intake", "workers", "listen"))
        return self

    @model_validator(mode="after")
    def _senders_known(self) -> Config:
        for name, channel in self.channels.items():
            if isinstance(channel, EmailChannelConfig) and channel.sender(self.provider.mail_from) is None:
                message = (
                    "no sender: set mail_from here or provider.mail_from (a username only if an address)"
                )
                raise LocatedError(message, ("channels", name, "mail_from"))
        return self

    @model_validator(mode="after")
    def _routes_resolve(self) -> Config:
        self.policy()  # its ValueError names an unknown window or fallback, or a repeated route name
        return self

    def policy(self) -> tuple[Route, ...]:
        """The route tree as the pure core's :class:`~daemon.core.routing.Route` objects."""
        return build_policy(self.routes, self.windows, self.directory)

    def policy_digest(self) -> str:
        """A digest of what plans notifications (the routes and their windows), the same in every
        process that reads the same routes: a reload's owed re-plan is stored under it."""
        policy = {
            "routes": [route.model_dump(mode="json", by_alias=True) for route in self.routes],
            "windows": {name: w.model_dump(mode="json", by_alias=True) for name, w in self.windows.items()},
        }
        return hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()

    def templates(self) -> dict[str, dict[str, MessageTemplate]]:
        """Message templates by route name, then channel name (docs/templates.md)."""
        return route_templates(self.routes)

    @property
    def source(self) -> ConfigSource | None:
        """What this configuration was parsed from (None if built in code).

        Intake workers parse the same text, so they run exactly the configuration the daemon runs.
        """
        return self._source

    def api_tokens(self) -> dict[str, str]:
        """API token name to its secret value."""
        return {t.name: t.token.get_secret_value() for t in self.api.tokens}


# --- loading and errors -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems) or (self.__doc__ or "")


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, resolve and validate the YAML file at ``path``; ``env`` defaults to ``os.environ``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem(str(path), None, "", f"cannot read the configuration: {reason}")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8: byte 0x{raw[exc.start]:02x} (save the file as UTF-8)"
        raise ConfigError([ConfigProblem(str(path), line, "", message)]) from None
    return parse_config(text, filename=str(path), env=env)


def parse_config(text: str, *, filename: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
    """Validate YAML ``text``; every problem is reported at once in one :class:`ConfigError`."""
    resolver = SecretResolver(os.environ if env is None else env)
    try:
        doc = load_yaml(text, string_hook=resolver.resolve)
    except YamlSyntaxError as exc:
        raise ConfigError([ConfigProblem(filename, exc.line, "", str(exc))]) from None
    if not isinstance(doc.data, dict):
        found = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
        raise ConfigError(
            [ConfigProblem(filename, doc.line_of(()), "", f"expected a mapping, found {found}")]
        )
    config, problems = _validate(doc)
    problems.sort(key=lambda p: p.line or 0)
    if problems:
        # pydantic's messages can quote input, and the input may be a resolved secret
        raise ConfigError(
            [
                ConfigProblem(filename, p.line, format_path(p.loc), resolver.redact(p.message))
                for p in problems
            ]
        ) from None
    assert config is not None
    config._source = ConfigSource(text, filename, None if env is None else dict(env))
    return config


def _validate(doc: YamlDocument) -> tuple[Config | None, list[SourceProblem]]:
    channels = doc.data.get("channels")
    context = {"channels": channels if isinstance(channels, dict) else None}
    # top-level x-* keys hold YAML anchors for reuse, as in Compose files
    data = {k: v for k, v in doc.data.items() if not k.startswith("x-")}
    try:
        return Config.model_validate(data, context=context), doc.problems
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
    problems = list(doc.problems)
    for error in errors:
        cause = (error.get("ctx") or {}).get("error")
        loc = doc.path_of((*error["loc"], *cause.loc) if isinstance(cause, LocatedError) else error["loc"])
        # a value whose secret reference failed would only fail again, less clearly
        if not any(loc[: len(p.loc)] == p.loc for p in doc.problems):
            problems.append(SourceProblem(doc.line_of(loc), loc, _message(error, loc)))
    return None, problems


class _SchemaGenerator(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        # pydantic writes timedelta defaults as ISO 8601 ("PT15S"), which the YAML does not accept
        return format_duration(dft) if isinstance(dft, timedelta) else super().encode_default(dft)


def config_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`Config`, for editors (``backchannel schema``)."""
    schema = Config.model_json_schema(schema_generator=_SchemaGenerator)
    return {
        **schema,
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "backchannel configuration",
    }


def _message(error: ErrorDetails, loc: Loc) -> str:
    if error["type"] == "missing":
        return "required"
    if error["type"] == "extra_forbidden":
        return f"unknown key {loc[-1]!r}" if loc else "unknown key"
    if error["type"] == "union_tag_not_found":
        return "needs a 'type'"
    if error["msg"] == "Input should be 'defer'":
        return "expected a list of channel names or 'defer'"
    return error["msg"].removeprefix("Value error, ")
