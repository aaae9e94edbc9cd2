"""Configuration of the SMTP smart host (``intake.smtp``) and its severity rules.

Field reference: ``docs/smtp-intake.md``. The intake is never an open relay, so a configuration
that would let nobody in, or let a user in only over an unusable channel, is an error at load.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator

from daemon.configbase import Duration, Model, PositiveInt, split_listen
from daemon.core.model import Severity
from daemon.intake.smtp_auth import PasswordHash, normalise_domain

DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc
    return value


class SmtpUser(Model):
    name: str = Field(min_length=1, max_length=256)
    #: from `backchannel hash-password`; a secret reference (${ENV}, ${file:...}) works too
    password_hash: SecretStr

    @field_validator("password_hash")
    @classmethod
    def _parses(cls, value: SecretStr) -> SecretStr:
        PasswordHash(value.get_secret_value())
        return value


class SmtpTls(Model):
    """STARTTLS (RFC 3207) with this certificate chain and key (PEM)."""

    cert_file: Path
    key_file: Path
    #: refuse MAIL and AUTH until the client has started TLS, whatever its address
    required: bool = False


class SeverityRule(Model):
    """Conditions (all must hold; regexes are searched, case-insensitive) and the severity they give.

    Either ``severity`` or ``severity_from_header``: the latter takes the severity named by that
    header's value (``X-Backchannel-Severity: critical``) and does not match when it names none.
    """

    name: str | None = Field(None, min_length=1, max_length=128)
    severity: Severity | None = None
    severity_from_header: str | None = Field(None, pattern=r"^[!-9;-~]+$")
    #: the normalised Importance / X-Priority / Priority / X-MSMail-Priority of the message
    importance: list[Literal["high", "normal", "low"]] | None = Field(None, min_length=1)
    subject: str | None = None
    sender: str | None = None
    #: matches when any envelope recipient matches
    recipient: str | None = None
    #: header name to a regex its value must match (a missing header does not match)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("subject", "sender", "recipient")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _regex(value)

    @field_validator("headers")
    @classmethod
    def _header_regexes(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: _regex(pattern) for name, pattern in value.items()}

    @model_validator(mode="after")
    def _one_outcome(self) -> SeverityRule:
        if (self.severity is None) == (self.severity_from_header is None):
            raise ValueError("give either severity or severity_from_header")
        return self


class SmtpIntakeConfig(Model):
    listen: str = "127.0.0.1:2525"
    #: a second listener with submission semantics (RFC 6409, port 587): AUTH required there
    submission_listen: str | None = None
    #: the name in the greeting and EHLO reply (default: backchannel.<this machine's host name>)
    hostname: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+$")
    max_message_bytes: PositiveInt = DEFAULT_MAX_MESSAGE_BYTES
    #: a session idle this long is closed
    idle_timeout: Duration = timedelta(minutes=5)
    #: sessions open at once; past it a new connection gets 421 (keep under the unit's LimitNOFILE)
    max_sessions: PositiveInt = 500
    #: sessions open at once from one address outside ``allowed_networks`` (Postfix's
    #: smtpd_client_connection_count_limit, which also spares its own networks)
    max_sessions_per_client: PositiveInt = 50
    tls: SmtpTls | None = None
    #: AUTH without TLS, only for clients connecting over loopback (127.0.0.0/8, ::1)
    allow_plaintext_auth_on_loopback: bool = False
    #: clients from these networks may send without authenticating (not on the submission listener)
    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    users: list[SmtpUser] = Field(default_factory=list)
    #: recipients must be in one of these domains (``*.example.com`` for subdomains); empty: any
    recipient_domains: list[str] = Field(default_factory=list)
    #: the rendered text of a message (for backup channels) is cut to this many characters
    body_max_chars: PositiveInt = 4000
    source: str = Field("smtp", min_length=1, max_length=128)
    default_severity: Severity = Severity.INFO
    #: the first rule that matches gives the severity; none matching gives default_severity
    rules: list[SeverityRule] = Field(default_factory=list)
    #: these headers' decoded values become labels ``header:<name in lower case>``, which routes match
    label_headers: list[Annotated[str, Field(pattern=r"^[!-9;-~]+$", max_length=128)]] = Field(
        default_factory=list, max_length=32
    )
    #: tell a relayed message's sender when it cannot be delivered (RFC 3464); never the null sender
    bounces: bool = True
    #: those reports' From (default: MAILER-DAEMON@hostname, else @ the host's name)
    bounce_from: str | None = Field(None, pattern=r"^[^\s@<>]+@[^\s@<>]+$", max_length=254)

    @property
    def greeting_name(self) -> str:
        """The name it greets clients with (and signs its delivery reports with).

        Never the host's own name by default: a Postfix on the same host relaying here (relayhost
        ``[127.0.0.1]:2525``, the default listen) compares the first word of the EHLO reply with its
        own myhostname and bounces its mail when they are equal ("5.4.6 mail for ... loops back to
        myself", Postfix's smtp_proto.c)."""
        return self.hostname or f"backchannel.{socket.gethostname()}"

    @property
    def report_from(self) -> str:
        """The delivery reports' From: ``bounce_from``, else MAILER-DAEMON at ``hostname`` or the
        host's name (a domain that exists, unlike the greeting's default, so a provider checking
        the sender's domain takes the report)."""
        return self.bounce_from or f"MAILER-DAEMON@{self.hostname or socket.gethostname()}"

    @field_validator("listen", "submission_listen")
    @classmethod
    def _valid_listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @field_validator("recipient_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        for domain in value:
            if not re.fullmatch(r"(\*\.)?[^\s@*]+", domain):
                raise ValueError(f"{domain!r}: expected a domain such as example.com or *.example.com")
        return [normalise_domain(d) for d in value]

    @model_validator(mode="after")
    def _not_open_nor_closed(self) -> SmtpIntakeConfig:
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("user names must be unique")
        if not self.users and not self.allowed_networks:
            raise ValueError("nobody could send: configure users, allowed_networks, or both")
        if self.submission_listen is not None and not self.users:
            raise ValueError("submission_listen requires authentication: configure users")
        if self.users and self.tls is None and not self.allow_plaintext_auth_on_loopback:
            raise ValueError(
                "users can only log in over TLS: configure tls (or allow_plaintext_auth_on_loopback)"
            )
        return self

    @property
    def address(self) -> tuple[str, int]:
        return split_listen(self.listen)

    @property
    def submission_address(self) -> tuple[str, int] | None:
        return None if self.submission_listen is None else split_listen(self.submission_listen)

    def user_hashes(self) -> dict[str, str]:
        return {u.name: u.password_hash.get_secret_value() for u in self.users}


# --- classification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What severity rules look at: the envelope and a few headers of one message."""

    sender: str
    recipients: tuple[str, ...]
    subject: str
    #: "high", "normal" or "low"
    importance: str
    #: header names lower-cased; the first value of each, decoded
    headers: Mapping[str, str]


_SEVERITY_NAMES = frozenset(s.value for s in Severity)


class _Rule:
    def __init__(self, rule: SeverityRule) -> None:
        def compiled(pattern: str | None) -> re.Pattern[str] | None:
            return None if pattern is None else re.compile(pattern, re.IGNORECASE)

        self.name = rule.name
        self._rule = rule
        self._subject, self._sender, self._recipient = map(
            compiled, (rule.subject, rule.sender, rule.recipient)
        )
        self._headers = {k.lower(): re.compile(v, re.IGNORECASE) for k, v in rule.headers.items()}

    def severity(self, facts: MessageFacts) -> Severity | None:
        """The severity this rule gives the message, or None when it does not match."""
        if not self._conditions_hold(facts):
            return None
        if self._rule.severity_from_header is None:
            return self._rule.severity
        value = facts.headers.get(self._rule.severity_from_header.lower(), "").strip().lower()
        return Severity(value) if value in _SEVERITY_NAMES else None

    def _conditions_hold(self, facts: MessageFacts) -> bool:
        r = self._rule
        return (
            (r.importance is None or facts.importance in r.importance)
            and (self._subject is None or self._subject.search(facts.subject) is not None)
            and (self._sender is None or self._sender.search(facts.sender) is not None)
            and (self._recipient is None or any(self._recipient.search(a) for a in facts.recipients))
            and all(
                name in facts.headers and pattern.search(facts.headers[name]) is not None
                for name, pattern in self._headers.items()
            )
        )


class Classifier:
    """The configured rules, compiled once; the first matching rule decides."""

    def __init__(self, rules: Sequence[SeverityRule], default: Severity) -> None:
        self._rules = [_Rule(r) for r in rules]
        self._default = default

    def classify(self, facts: MessageFacts) -> tuple[Severity, str | None]:
        """The severity and the name of the rule that gave it (None: the default, or an unnamed rule)."""
        for rule in self._rules:
            if (severity := rule.severity(facts)) is not None:
                return severity, rule.name
        return self._default, None
