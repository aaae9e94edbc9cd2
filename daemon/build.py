"""From configuration to live objects: the channel registry and the checks.

The registry is an explicit dict from a channel's YAML ``type:`` to the function that builds its
adapter; adding a channel kind means one module in ``channels/`` and one line here.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from channels.base import Channel, ChannelError, OutboundMessage
from channels.email import EmailChannel, SmtpSettings
from channels.gsm import segment_count
from channels.webhook import WebhookChannel
from channels.webhook_templates import template_for
from daemon.api.auth import Grant
from daemon.api.callbacks import TwilioAccount
from daemon.checks.oauth import OAuthError, TokenSource
from daemon.config import Config
from daemon.config_channels import (
    ChannelConfig,
    EmailChannelConfig,
    SlackChannelConfig,
    SmsChannelConfig,
    WebhookChannelConfig,
)
from daemon.configbase import RetryConfig, SmtpConfig
from daemon.core.backoff import RetryPolicy
from daemon.core.digest import SMS_LAYOUT
from daemon.digesting import DigestPolicy, sms_fits
from daemon.dispatch_policy import ChannelPolicy
from daemon.logs import register_secret
from daemon.store.base import Store
from daemon.store.postgres_config import PostgresStoreConfig
from daemon.store.sqlite import SqliteStore


def smtp_settings(smtp: SmtpConfig, *, token: Callable[[], Awaitable[str]] | None = None) -> SmtpSettings:
    """The server in ``smtp``, for the email channel and the SMTP checks alike.

    ``token`` is the channel's XOAUTH2 token; a check holds a TokenSource of its own instead.
    """
    return SmtpSettings(
        host=smtp.host,
        port=smtp.port,
        starttls=smtp.starttls,
        tls=smtp.tls,
        username=smtp.username,
        password=None if smtp.password is None else smtp.password.get_secret_value(),
        timeout_s=smtp.timeout.total_seconds(),
        verify_tls=smtp.verify_tls,
        ca_file=None if smtp.ca_file is None else str(smtp.ca_file),
        helo=smtp.helo,
        token=token,
    )


def _channel_token(source: TokenSource) -> Callable[[], Awaitable[str]]:
    """A token for the email channel; no token is a transient channel error (not the provider's fault)."""

    async def token() -> str:
        try:
            return await source.token()
        except OAuthError as exc:
            raise ChannelError(f"no OAuth2 token for SMTP: {exc.reason}") from exc

    return token


def _email(name: str, cfg: ChannelConfig, config: Config) -> Channel:
    assert isinstance(cfg, EmailChannelConfig)
    smtp = cfg.smtp or config.provider.smtp
    mail_from = cfg.sender(config.provider.mail_from)
    assert mail_from is not None, "Config._senders_known"
    token = None if smtp.oauth2 is None else _channel_token(TokenSource(smtp.oauth2))
    settings = smtp_settings(smtp, token=token)
    return EmailChannel(name, settings, mail_from=mail_from, default_to=tuple(cfg.to))


def _webhook(name: str, cfg: ChannelConfig, config: Config) -> Channel:
    assert isinstance(cfg, WebhookChannelConfig)
    return WebhookChannel(
        name,
        cfg.url,
        cfg.secret_values() or None,
        headers=cfg.headers,
        timeout_s=cfg.timeout.total_seconds(),
        template=template_for(cfg.template, cfg.preset),
        options=cfg.option_values(),
        content_type=cfg.content_type,
        verify=cfg.verify if isinstance(cfg.verify, bool) else str(cfg.verify),
        allow_private=cfg.allow_private,
    )


def _slack(name: str, cfg: ChannelConfig, config: Config) -> Channel:
    assert isinstance(cfg, SlackChannelConfig)
    from channels.slack import SlackChannel  # slack-sdk only where Slack is configured (start-up, memory)

    return SlackChannel(
        name,
        token=_reveal(cfg.token),
        webhook_url=_reveal(cfg.webhook_url),
        targets=cfg.targets,
        dm_recipients=cfg.dm_recipients,
        base_url=cfg.api_url,
        timeout_s=cfg.timeout.total_seconds(),
        pace=cfg.pace,
    )


def _sms(name: str, cfg: ChannelConfig, config: Config) -> Channel:
    assert isinstance(cfg, SmsChannelConfig)
    from channels.sms import SmsChannel  # twilio only where SMS is configured (start-up, memory)

    return SmsChannel(
        name,
        account_sid=cfg.account_sid,
        auth_token=cfg.auth_token.get_secret_value(),
        from_number=cfg.from_number,
        messaging_service_sid=cfg.messaging_service_sid,
        recipients=tuple(cfg.recipients),
        max_segments=cfg.max_segments,
        segments_per_s=cfg.pace,
        validity_period_s=int(cfg.validity_period.total_seconds()),
        status_callback=cfg.status_callback,
        timeout_s=cfg.timeout.total_seconds(),
        base_url=cfg.api_url,
    )


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


CHANNEL_BUILDERS: dict[str, Callable[[str, ChannelConfig, Config], Channel]] = {
    "email": _email,
    "webhook": _webhook,
    "slack": _slack,
    "sms": _sms,
}


def build_channels(config: Config) -> dict[str, Channel]:
    return {name: CHANNEL_BUILDERS[cfg.type](name, cfg, config) for name, cfg in config.channels.items()}


def retry_policy(retry: RetryConfig) -> RetryPolicy:
    return RetryPolicy(
        initial_s=retry.initial.total_seconds(),
        max_s=retry.max.total_seconds(),
        multiplier=retry.multiplier,
        max_attempts=retry.max_attempts,
    )


def primary_channels(config: Config) -> frozenset[str]:
    """The email channels that send through the watched provider itself."""
    return frozenset(
        name
        for name, cfg in config.channels.items()
        if isinstance(cfg, EmailChannelConfig) and cfg.smtp is None
    )


def mail_channels(config: Config) -> frozenset[str]:
    """Every email channel: what one delivered is in a mailbox (the provider's, or a second one)."""
    return frozenset(name for name, cfg in config.channels.items() if isinstance(cfg, EmailChannelConfig))


def channel_policies(config: Config) -> dict[str, ChannelPolicy]:
    policies = {}
    for name, cfg in config.channels.items():
        policies[name] = ChannelPolicy(
            retry=retry_policy(cfg.retry or config.dispatch.retry),
            concurrency=cfg.concurrency,
            primary=name in primary_channels(config),
            digest=digest_policy(cfg),
        )
    return policies


def digest_policy(cfg: ChannelConfig) -> DigestPolicy | None:
    """How a paced channel digests a burst (docs/digests.md); None for unpaced or disabled ones."""
    if isinstance(cfg, SlackChannelConfig) and cfg.digest.enabled:
        dm = cfg.dm_recipients
        return replace(_digest_base(cfg), destination=lambda m: m.recipients if dm else ())
    if isinstance(cfg, SmsChannelConfig) and cfg.digest.enabled:
        from channels.sms import render_text  # twilio only where SMS is configured

        def cost(message: OutboundMessage) -> float:
            # The pace is per sender: each number costs the message's segments.
            numbers = _phone_numbers(message.recipients) or tuple(cfg.recipients)
            return float(segment_count(render_text(message, cfg.max_segments)) * max(1, len(numbers)))

        return replace(
            _digest_base(cfg),
            layout=SMS_LAYOUT,
            fits=sms_fits(cfg.digest.segments),
            cost=cost,
            destination=lambda m: _phone_numbers(m.recipients),
        )
    return None


def _digest_base(cfg: SlackChannelConfig | SmsChannelConfig) -> DigestPolicy:
    d = cfg.digest
    return DigestPolicy(
        pace_per_s=cfg.pace,
        drain_target_s=d.drain_target.total_seconds(),
        max_items=d.max_items,
        top=d.top,
        link=d.link,
    )


def _phone_numbers(recipients: tuple[str, ...]) -> tuple[str, ...]:
    """The recipients an SMS channel sends to (its e-mail addresses are not ours)."""
    return tuple(r for r in recipients if r.startswith("+"))


def register_secrets(config: Config) -> None:
    """Redact every secret in ``config`` from the logs; the daemon does this first, before anything logs."""
    for secret in secrets_of(config).values():
        register_secret(secret)


def secrets_of(config: Config) -> Mapping[str, str]:
    """Every secret value in the configuration (each SecretStr, wherever it is), so logs redact them."""
    found: dict[str, str] = {}
    _collect(config, "", found)
    for name, cfg in config.channels.items():
        if isinstance(cfg, WebhookChannelConfig):
            found.update(_url_secrets(f"channels.{name}.url", cfg.url))
    if isinstance(config.store, PostgresStoreConfig):
        # libpq quotes the part of a URL it cannot parse ('invalid percent-encoded token: "pa%ss"'),
        # and psycopg's pool logs that: the password alone must be masked, not only the whole URL.
        found.update(_password_secrets("store.url", config.store.url.get_secret_value()))
    return found


def _url_secrets(path: str, url: str) -> dict[str, str]:
    """What of a webhook URL is secret: all of it when its query may carry a signature (a Teams
    workflow URL does), and its password (:func:`_password_secrets`)."""
    parts = urlsplit(url)
    found = {path: url} if parts.query or parts.password else {}
    return found | _password_secrets(path, url)


def _password_secrets(path: str, url: str) -> dict[str, str]:
    """The password of a ``user:password@`` URL, as written, percent-decoded and as the ``Basic``
    credentials a webhook sends it in."""
    parts = urlsplit(url)
    found: dict[str, str] = {}
    if parts.password:
        found[f"{path}.password"] = parts.password
        found[f"{path}.password.decoded"] = unquote(parts.password)
        basic = f"{unquote(parts.username or '')}:{unquote(parts.password)}"
        found[f"{path}.basic"] = base64.b64encode(basic.encode()).decode("ascii")
    return found


def _collect(value: object, path: str, found: dict[str, str]) -> None:
    if isinstance(value, SecretStr):
        if secret := value.get_secret_value():
            found[path] = secret
    elif isinstance(value, BaseModel):
        for key in type(value).model_fields:
            _collect(getattr(value, key), f"{path}.{key}".lstrip("."), found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect(item, f"{path}.{key}", found)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _collect(item, f"{path}[{index}]", found)


def twilio_accounts(config: Config) -> list[TwilioAccount]:
    """The SMS channels that receive Twilio status callbacks, for verifying their signatures."""
    return [
        TwilioAccount(name, cfg.auth_token.get_secret_value(), cfg.status_callback)
        for name, cfg in config.channels.items()
        if isinstance(cfg, SmsChannelConfig) and cfg.status_callback is not None
    ]


#: an intake worker tries for SQLite's write lock ten times less often than the daemon
WORKER_WRITE_RETRY_S = 0.001


def build_store(config: Config, *, intake_worker: bool = False) -> Store:
    if isinstance(config.store, PostgresStoreConfig):
        from daemon.store.postgres import PostgresStore  # psycopg only where PostgreSQL is configured

        return PostgresStore.from_config(config.store)
    busy_timeout_s = config.store.busy_timeout.total_seconds()
    if intake_worker:
        # waits longer for the lock than the daemon (its own claims and outcomes go first)
        return SqliteStore(
            config.store.path, busy_timeout_s=busy_timeout_s, write_retry_s=WORKER_WRITE_RETRY_S
        )
    return SqliteStore(config.store.path, busy_timeout_s=busy_timeout_s)


def describe_store(config: Config) -> str:
    """Where the outbox is, without the URL (it may carry a password)."""
    if isinstance(config.store, PostgresStoreConfig):
        node = config.store.node or "host:pid"
        return f"PostgreSQL, node {node}"
    return f"SQLite {config.store.path}"


def api_grants(config: Config) -> dict[str, Grant]:
    """What each API token may do, and how often."""
    grants = {}
    for token in config.api.tokens:
        limit = token.rate_limit
        grants[token.name] = Grant(
            scopes=frozenset(token.scopes),
            per_second=None if limit is None else limit.per_second,
            burst=1 if limit is None else limit.burst,
        )
    return grants
