"""Every kind of check, with its deciding fields, loads from YAML and builds."""

from __future__ import annotations

import pytest

from daemon.build_checks import build_checks
from daemon.config import ConfigError, parse_config
from daemon.core.assessment import Role

BASE = """\
store: {path: /tmp/x.db}
api: {tokens: [{name: t, token: t0123456789}]}
channels: {email: {type: email}}
routes: [{match: {}, healthy: [email], outage: defer}]
"""
PROVIDER = """\
provider:
  name: exchange-online
  smtp: {host: smtp.office365.com, username: canary@example.com, password: pw}
  quorum: 2
  controls: {quorum: 1}
  flap: {low: 5, high: 25}
  checks:
    - {type: smtp, every: 15s}
    - {type: imap, imap: {host: outlook.office365.com, username: canary@example.com, password: pw}}
    - type: roundtrip
      to: canary@example.com
      imap: {host: outlook.office365.com, username: canary@example.com, password: pw}
    - {type: graph, tenant: contoso.onmicrosoft.com, client_id: abc, client_secret: s3cret}
    - {type: statuspage, url: "https://status.sendgrid.com", components: [Mail Sending]}
    - {type: google_workspace}
    - {type: http, url: "https://status.example.net/health", path: state, in: [green, yellow]}
    - {type: tcp, name: dns, host: 1.1.1.1, port: 53}
"""


def test_every_check_type_loads_and_builds() -> None:
    """All eight check types parse, get default roles and names, and become live checks."""
    config = parse_config(BASE + PROVIDER)
    policy = config.provider.check_policy()
    assert policy.quorum == 2
    assert policy.of("graph").role == Role.CORROBORATE
    assert policy.of("dns").role == Role.CONTROL
    assert policy.of("roundtrip").role == Role.TRIGGER
    built = build_checks(config)
    assert [s.check.name for s in built] == [
        "smtp",
        "imap",
        "roundtrip",
        "graph",
        "statuspage",
        "google_workspace",
        "http",
        "dns",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("quorum: 2", "quorum: 5"), "quorum 5 exceeds the weight of the trigger checks"),
        (("{type: smtp, every: 15s}", "{type: smtp, every: 15s, weight: 0}"), "weight"),
        (("{type: smtp, every: 15s}", "{type: smtp, every: 15s, role: boss}"), "role"),
        (("name: dns", "name: graph"), "check names must be unique"),
        (("flap: {low: 5, high: 25}", "flap: {low: 30, high: 25}"), "flap"),
    ],
)
def test_impossible_deciding_is_a_config_error(change: tuple[str, str], message: str) -> None:
    """A quorum that cannot be reached, duplicate names or inverted flap thresholds are refused."""
    with pytest.raises(ConfigError, match=message):
        parse_config(BASE + PROVIDER.replace(*change))
