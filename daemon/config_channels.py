"""Configuration of the delivery channels, one model per YAML ``type:``."""

from __future__ import annotations

import binascii
import ipaddress
import re
from base64 import b64decode
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Discriminator, Field, FilePath, SecretStr, Tag, model_validator

from channels.address_guard import address_class
from channels.webhook_templates import TemplateError, check_template, template_for
from daemon.config_digest import DigestConfig, SmsDigestConfig
from daemon.config_templates import MessageTemplateConfig
from daemon.configbase import (
    Duration,
    EmailAddress,
    LocatedError,
    Model,
    PositiveInt,
    RetryConfig,
    Secret,
    SmtpConfig,
)


class EmailChannelConfig(Model):
    type: Literal["email"]
    smtp: SmtpConfig | None = None
    mail_from: EmailAddress | None = None
    to: list[EmailAddress] = Field(default_factory=list)
    concurrency: PositiveInt = 4
    retry: RetryConfig | None = None
    #: the subject and body this channel sends, unless a route has its own (docs/templates.md)
    message_template: MessageTemplateConfig | None = None

    def sender(self, default: str | None) -> str | None:
        """The envelope sender: ``mail_from``, else ``default`` (``provider.mail_from``), else the
        username of this channel's own ``smtp`` when it is an address (never one that is not:
        SendGrid's ``apikey`` would be refused as a sender, and blamed on the provider)."""
        own = None if self.smtp is None else self.smtp.username
        return self.mail_from or default or (own if own is not None and "@" in own else None)


def _webhook_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return value


def _webhook_secret(value: SecretStr) -> SecretStr:
    # Standard Webhooks: "whsec_" + base64 of the key, https://www.standardwebhooks.com/ (signing)
    text = value.get_secret_value().removeprefix("whsec_")
    try:
        key = b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected base64, optionally prefixed whsec_ (Standard Webhooks)") from None
    if len(key) < 16:
        raise ValueError("the key must decode to at least 16 bytes")
    return value


WebhookSecret = Annotated[SecretStr, AfterValidator(_webhook_secret)]
#: one secret, or a list during a rotation (the errors name the form that was given, not both)
WebhookSecrets = Annotated[
    Annotated[WebhookSecret, Tag("one")] | Annotated[list[WebhookSecret], Tag("many")],
    Discriminator(lambda value: "many" if isinstance(value, list) else "one"),
]


class WebhookChannelConfig(Model):
    """A signed JSON POST (Standard Webhooks), or a templated body for another service's webhook."""

    type: Literal["webhook"]
    url: Annotated[str, AfterValidator(_webhook_url)]
    #: one secret, or several during a rotation (each signs; receivers accept any)
    secret: WebhookSecrets | None = None
    template: str | None = None
    preset: Literal["pagerduty", "teams"] | None = None
    #: values the template or preset reads as ``options.<name>`` (e.g. PagerDuty's routing_key)
    options: dict[str, SecretStr] = Field(default_factory=dict)
    content_type: str = Field("application/json", pattern=r"^[\w.+-]+/[\w.+-]+(\s*;.*)?$")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    #: TLS verification: on, or a CA bundle file for an internal CA
    verify: bool | FilePath = True
    #: allow loopback, private and link-local targets (refused by default: SSRF guard)
    allow_private: bool = False
    #: sends in flight at once; a webhook receiver answers fast, so more overlap pays (docs/performance.md)
    concurrency: PositiveInt = 16
    retry: RetryConfig | None = None
    #: the subject and body this channel sends, unless a route has its own (docs/templates.md)
    message_template: MessageTemplateConfig | None = None

    def secret_values(self) -> list[str]:
        items = [] if self.secret is None else self.secret if isinstance(self.secret, list) else [self.secret]
        return [s.get_secret_value() for s in items]

    def option_values(self) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in self.options.items()}

    @model_validator(mode="after")
    def _body(self) -> WebhookChannelConfig:
        if self.secret == []:
            raise ValueError("secret: give at least one")
        try:
            template = template_for(self.template, self.preset)
            if template is not None:
                check_template(template, options=self.option_values(), content_type=self.content_type)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        if template is None and self.secret is None:
            raise ValueError("without a template or preset the body is backchannel's signed JSON: set secret")
        return self

    @model_validator(mode="after")
    def _guard_allows(self) -> WebhookChannelConfig:
        # a literal address the SSRF guard refuses would fail every send, first met in the outage
        host = urlsplit(self.url).hostname or ""
        try:
            refused = address_class(ipaddress.ip_address(host))
        except ValueError:
            refused = "loopback" if host.lower() == "localhost" else None
        if refused is not None and not self.allow_private:
            message = f"{host} is a {refused} address, which the SSRF guard refuses: set allow_private: true"
            raise LocatedError(message, ("url",))
        return self

    @model_validator(mode="after")
    def _one_authorization(self) -> WebhookChannelConfig:
        # The URL's user:password@ goes as Authorization: Basic (channels/webhook.py); a header too
        # would leave unclear which the receiver is meant to get.
        parts = urlsplit(self.url)
        if (parts.username or parts.password) and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError(
                "url has user:password@ (sent as Authorization: Basic) and headers an Authorization: keep one"
            )
        return self


def _channel_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
        raise ValueError("channel names are lowercase letters, digits, '-' and '_'")
    return value


ChannelName = Annotated[str, AfterValidator(_channel_name)]


def _e164(value: str) -> str:
    from channels.sms import validate_e164

    return validate_e164(value)


E164 = Annotated[str, AfterValidator(_e164)]


class SlackChannelConfig(Model):
    """Slack through the Web API (bot token) or an incoming webhook: exactly one of the two."""

    type: Literal["slack"]
    token: Secret | None = None
    webhook_url: Secret | None = None
    #: the Slack app's signing secret: verifies Acknowledge clicks at /v1/callbacks/slack (docs/policies.md)
    signing_secret: Secret | None = None
    #: channel ids/names, user ids (DM) or email addresses (looked up once) that every notification goes to
    targets: list[str] = Field(default_factory=list)
    dm_recipients: bool = False
    pace: float = Field(1.0, gt=0, description="messages per second per destination")
    timeout: Duration = timedelta(seconds=10)
    #: Slack's Web API base; changed only for a proxy or a test stand-in
    api_url: Annotated[str, AfterValidator(_webhook_url)] = "https://slack.com/api/"
    concurrency: PositiveInt = 4
    retry: RetryConfig | None = None
    #: the subject and body this channel sends, unless a route has its own (docs/templates.md)
    message_template: MessageTemplateConfig | None = None
    #: bursts past the pace become digests (docs/digests.md)
    digest: DigestConfig = DigestConfig()

    @model_validator(mode="after")
    def _one_mode(self) -> SlackChannelConfig:
        if (self.token is None) == (self.webhook_url is None):
            raise ValueError("give exactly one of token (bot) and webhook_url (incoming webhook)")
        if self.token is not None and not self.targets and not self.dm_recipients:
            raise ValueError("a bot-token channel needs targets (or dm_recipients: true)")
        if self.webhook_url is not None and (self.targets or self.dm_recipients):
            raise ValueError("an incoming webhook posts to its own channel: no targets or dm_recipients")
        return self


class SmsChannelConfig(Model):
    """SMS through Twilio's Messages API."""

    type: Literal["sms"]
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: Secret
    from_number: E164 | None = None
    messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    recipients: list[E164] = Field(default_factory=list)
    max_segments: int = Field(3, ge=1, le=10)
    pace: float = Field(1.0, gt=0, description="segments per second for this sender")
    validity_period: Duration = timedelta(minutes=10)
    #: the public URL of this daemon's /v1/callbacks/twilio, as Twilio will call it (signatures cover it)
    status_callback: Annotated[str, AfterValidator(_webhook_url)] | None = None
    timeout: Duration = timedelta(seconds=10)
    #: Twilio's API base; changed only for a proxy or a test stand-in
    api_url: Annotated[str, AfterValidator(_webhook_url)] | None = None
    concurrency: PositiveInt = 1
    retry: RetryConfig | None = None
    #: the subject and body this channel sends, unless a route has its own (docs/templates.md)
    message_template: MessageTemplateConfig | None = None
    #: bursts past the pace become digests of ``digest.segments`` segments (docs/digests.md)
    digest: SmsDigestConfig = SmsDigestConfig()

    @model_validator(mode="after")
    def _one_sender(self) -> SmsChannelConfig:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of from_number and messaging_service_sid")
        if self.digest.segments > self.max_segments:
            raise ValueError("digest.segments cannot exceed max_segments")
        if not 1 <= self.validity_period.total_seconds() <= 36_000:
            raise ValueError("validity_period must be between 1s and 10h (Twilio's limits)")
        return self


ChannelConfig = Annotated[
    EmailChannelConfig | WebhookChannelConfig | SlackChannelConfig | SmsChannelConfig,
    Field(discriminator="type"),
]
