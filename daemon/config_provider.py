"""Configuration of the watched provider: its SMTP server, the checks that watch it, the thresholds.

Field reference: ``docs/configuration.md`` (``provider``). The check models and the deciding fields
(``quorum``, ``controls``, ``flap``) come from :mod:`daemon.config_checks`;
:meth:`ProviderConfig.check_policy` gives the pure core's :class:`~daemon.core.assessment.Policy`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from daemon.config_checks import (
    CheckConfig,
    DecidingConfig,
    RoundtripCheckConfig,
    SmtpCheckConfig,
    check_names,
    stale_after,
)
from daemon.configbase import EmailAddress, LocatedError, PositiveInt, SmtpConfig
from daemon.core.assessment import Policy


def _default_check() -> CheckConfig:
    return SmtpCheckConfig(type="smtp")


class ProviderConfig(DecidingConfig):
    """The watched provider; ``quorum``, ``controls``, ``flap`` come from DecidingConfig."""

    name: str = Field(min_length=1)
    smtp: SmtpConfig
    checks: list[CheckConfig] = Field(default_factory=lambda: [_default_check()], min_length=1)
    failure_threshold: PositiveInt = 3
    success_threshold: PositiveInt = 3
    mail_from: EmailAddress | None = None
    #: tell people about outages, recoveries, credentials and local-network trouble: each becomes a
    #: notification (source "backchannel") routed by the policy like any other
    announce: bool = False

    @model_validator(mode="before")
    @classmethod
    def _mail_from_username(cls, data: Any) -> Any:
        if not isinstance(data, dict):  # validation says what it should be, with its line
            return data
        smtp = data.get("smtp")
        username = smtp.get("username") if isinstance(smtp, dict) else None
        # many providers' usernames are not addresses (SendGrid's is "apikey"): only borrow one that is
        if "mail_from" not in data and isinstance(username, str) and "@" in username:
            return {**data, "mail_from": username}
        return data

    @model_validator(mode="after")
    def _decidable(self) -> ProviderConfig:
        self.check_policy()  # its ValueError says what cannot work (no trigger, quorum too high)
        names = check_names(self.checks)
        if len(set(names)) != len(names):
            raise ValueError(f"check names must be unique: {', '.join(names)}")
        return self

    @model_validator(mode="after")
    def _canaries_have_senders(self) -> ProviderConfig:
        for index, check in enumerate(self.checks):
            if isinstance(check, RoundtripCheckConfig) and (check.mail_from or self.mail_from) is None:
                message = "the canary needs a sender: set mail_from here or provider.mail_from"
                raise LocatedError(message, ("checks", index, "mail_from"))
        return self

    def check_policy(self) -> Policy:
        """The pure core's view of the checks: roles, weights, how long a result counts."""
        return self.policy(
            {n: (c, stale_after(c)) for n, c in zip(check_names(self.checks), self.checks, strict=True)}
        )
