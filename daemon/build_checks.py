"""From check configuration to live checks: one builder per YAML ``type:``."""

from __future__ import annotations

from collections.abc import Callable

from daemon.build import smtp_settings
from daemon.checks.base import Check
from daemon.checks.google_workspace import GoogleWorkspaceCheck
from daemon.checks.graph import GraphCheck, GraphCredentials
from daemon.checks.http import HttpCheck, HttpCondition
from daemon.checks.imap import ImapCheck, ImapConfig, Mailbox
from daemon.checks.oauth import TokenSource
from daemon.checks.roundtrip import RoundtripCheck
from daemon.checks.smtp import SmtpCheck
from daemon.checks.statuspage import StatuspageCheck
from daemon.checks.tcp import TcpCheck
from daemon.config import Config
from daemon.config_checks import (
    CheckConfig,
    GoogleWorkspaceCheckConfig,
    GraphCheckConfig,
    HttpCheckConfig,
    ImapCheckConfig,
    RoundtripCheckConfig,
    SmtpCheckConfig,
    StatuspageCheckConfig,
    TcpCheckConfig,
    check_names,
)
from daemon.scheduler import ScheduledCheck


def _smtp(name: str, cfg: CheckConfig, config: Config) -> Check:
    assert isinstance(cfg, SmtpCheckConfig)
    smtp = cfg.smtp or config.provider.smtp
    tokens = None if smtp.oauth2 is None else TokenSource(smtp.oauth2)
    return SmtpCheck(
        name,
        smtp_settings(smtp),
        timeout_s=cfg.timeout.total_seconds(),
        token_source=tokens,
        cert_warn_days=cfg.cert_warn_days,
    )


def _mailbox(imap: ImapConfig, timeout_s: float) -> Mailbox:
    tokens = None if imap.oauth2 is None else TokenSource(imap.oauth2)
    return Mailbox(imap.probe_settings(), timeout_s=timeout_s, token_source=tokens)


def _imap(name: str, cfg: CheckConfig, config: Config) -> Check:
    assert isinstance(cfg, ImapCheckConfig)
    tokens = None if cfg.imap.oauth2 is None else TokenSource(cfg.imap.oauth2)
    return ImapCheck(
        name, cfg.imap.probe_settings(), timeout_s=cfg.timeout.total_seconds(), token_source=tokens
    )


def _roundtrip(name: str, cfg: CheckConfig, config: Config) -> Check:
    assert isinstance(cfg, RoundtripCheckConfig)
    timeout_s = cfg.timeout.total_seconds()
    smtp = cfg.smtp or config.provider.smtp
    tokens = None if smtp.oauth2 is None else TokenSource(smtp.oauth2)
    sender = SmtpCheck(f"{name}-send", smtp_settings(smtp), timeout_s=timeout_s / 2, token_source=tokens)
    mail_from = cfg.mail_from or config.provider.mail_from
    assert mail_from is not None, "ProviderConfig._canaries_have_senders"
    return RoundtripCheck(
        name, sender, _mailbox(cfg.imap, timeout_s), mail_from=mail_from, to=cfg.to, timeout_s=timeout_s,
        warn_after_s=cfg.warn_after.total_seconds(), fail_after_s=cfg.fail_after.total_seconds(),
    )  # fmt: skip


def _graph(name: str, cfg: CheckConfig, config: Config) -> Check:
    assert isinstance(cfg, GraphCheckConfig)
    credentials = GraphCredentials(cfg.tenant, cfg.client_id, cfg.client_secret.get_secret_value())
    return GraphCheck(
        name, credentials, service=cfg.service, graph_base=cfg.graph_base, login_base=cfg.login_base,
        timeout_s=cfg.timeout.total_seconds(),
    )  # fmt: skip


def _statuspage(name: str, cfg: CheckConfig, config: Config) -> Check:
    assert isinstance(cfg, StatuspageCheckConfig)
    return StatuspageCheck(name, cfg.url, components=cfg.components, timeout_s=cfg.timeout.total_seconds())


def _google_workspace(name: str, cfg: CheckConfig, config: Config) -> Check:
    assert isinstance(cfg, GoogleWorkspaceCheckConfig)
    return GoogleWorkspaceCheck(name, url=cfg.url, product=cfg.product, timeout_s=cfg.timeout.total_seconds())


def _http(name: str, cfg: CheckConfig, config: Config) -> Check:
    assert isinstance(cfg, HttpCheckConfig)
    accepted = tuple(cfg.in_) if cfg.in_ is not None else (() if cfg.equals is None else (cfg.equals,))
    condition = HttpCondition(expect_status=cfg.expect_status, path=cfg.path, accepted=accepted)
    return HttpCheck(
        name, cfg.url, condition=condition, headers=cfg.headers, timeout_s=cfg.timeout.total_seconds()
    )


def _tcp(name: str, cfg: CheckConfig, config: Config) -> Check:
    assert isinstance(cfg, TcpCheckConfig)
    return TcpCheck(name, cfg.host, cfg.port, timeout_s=cfg.timeout.total_seconds())


CHECK_BUILDERS: dict[str, Callable[[str, CheckConfig, Config], Check]] = {
    "smtp": _smtp,
    "imap": _imap,
    "roundtrip": _roundtrip,
    "graph": _graph,
    "statuspage": _statuspage,
    "google_workspace": _google_workspace,
    "http": _http,
    "tcp": _tcp,
}


def build_checks(config: Config) -> list[ScheduledCheck]:
    checks = config.provider.checks
    return [
        ScheduledCheck(
            CHECK_BUILDERS[cfg.type](name, cfg, config),
            cfg.every.total_seconds(),
            cfg.timeout.total_seconds(),
        )
        for name, cfg in zip(check_names(checks), checks, strict=True)
    ]
