"""Policy mistakes ops teams make in the routes, and what they get: FILE:LINE: path: message, or a
policy that does what it says. Found by a review of routing; each test failed on the code before."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.config import ConfigError, parse_config
from daemon.core.model import Notification, Severity
from daemon.core.routing import route_for

HEAD = """\
store: {path: /tmp/x.db}
api:
  tokens:
    - name: t
      token: "tok-SECRET-123456789"
provider:
  name: p
  smtp: {host: smtp.example.com, username: ops@example.com, password: "pw"}
channels:
  email: {type: email, to: [ops@example.com]}
  hook:
    type: webhook
    url: https://hooks.example.com/x
    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
directory:
  people:
    alice: {email: [alice@example.com], phone: "+4915110000001"}
windows:
  nights: {timezone: Europe/Berlin, from: "22:00", to: "07:00"}
routes:
"""
LAST = """\
  - name: everything
    healthy: [email]
    outage: defer
"""


def problems(routes: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + routes + LAST, filename="f.yaml")
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    "matcher", ["severity=crit", "severity=Critical", "severity=~crit", "severity!=page"]
)
def test_severity_matcher_that_compares_with_no_severity_is_refused(matcher: str) -> None:
    """``severity=crit`` never matches (``!=``: always): refused at its line, not routed past."""
    found = problems(
        f'  - name: pages\n    match: {{matchers: ["{matcher}"]}}\n    healthy: [email]\n    outage: [hook]\n'
    )
    assert found == [
        f"f.yaml:22: routes[0].match.matchers[0]: '{matcher}' compares with no severity "
        "(severities: critical, high, warning, info)"
    ]


@pytest.mark.parametrize(
    ("match", "path"),
    [
        ('{matchers: ["header:X-Team=~db|infra"]}', "matchers[0]"),
        ('{matchers: ["label:header:X-Team!=db"]}', "matchers[0]"),
        ('{labels: {"header:X-Team": db}}', "labels"),
    ],
)
def test_header_label_named_with_capitals_is_refused(match: str, path: str) -> None:
    """SMTP header labels are lower case (``header:x-team``): one named with capitals never matches."""
    found = problems(f"  - name: team\n    match: {match}\n    healthy: [email]\n    outage: [hook]\n")
    assert len(found) == 1
    assert found[0].startswith(f"f.yaml:22: routes[0].match.{path}: ")
    assert "header:x-team" in found[0]


def test_duplicate_child_route_name_names_its_line_and_path() -> None:
    """A child route named like another route is reported where it is, not at line 1."""
    found = problems(
        "  - name: db\n    match: {labels: {team: db}}\n    healthy: [email]\n    outage: [hook]\n"
        "    routes:\n      - name: everything\n        match: {severity: [critical]}\n"
    )
    assert found == [
        "f.yaml:28: routes[1].name: duplicate route name 'everything' (also routes[0].routes[0])"
    ]


def test_unknown_fallback_names_its_line_and_path() -> None:
    """A fallback that is no person or group is reported at the route's ``fallback``."""
    found = problems(
        "  - name: db\n    match: {labels: {team: db}}\n    healthy: [email]\n    outage: [hook]\n"
        "    routes:\n      - name: db-critical\n        match: {severity: [critical]}\n"
        "        fallback: bob\n"
    )
    assert found == ["f.yaml:28: routes[0].routes[0].fallback: fallback 'bob' is no person or group"]


def test_windowed_catch_all_before_the_last_route_is_accepted() -> None:
    """ "Everything, at night" is a route the later ones still follow by day: not a shadowing catch-all."""
    config = parse_config(
        HEAD + "  - name: nightly\n    active_in: [nights]\n    healthy: [email]\n    outage: [hook]\n" + LAST
    )
    note = Notification("n1", "k1", datetime(2026, 1, 5, 12, tzinfo=UTC), Severity.INFO, "disk")
    assert route_for(note, config.policy(), datetime(2026, 1, 5, 23, tzinfo=UTC)).name == "nightly"
    assert route_for(note, config.policy(), datetime(2026, 1, 5, 12, tzinfo=UTC)).name == "everything"


def test_recipient_regex_with_capitals_matches_like_the_address() -> None:
    """``recipient=~.*@Example\\.com`` matches alice@example.com: addresses compare case-insensitively."""
    config = parse_config(
        HEAD
        + '  - name: ours\n    match: {matchers: ["recipient=~.*@Example\\\\.com"]}\n'
        + "    healthy: [email]\n    outage: [hook]\n"
        + LAST
    )
    note = Notification(
        "n1",
        "k1",
        datetime(2026, 1, 5, 12, tzinfo=UTC),
        Severity.INFO,
        "disk",
        recipients=("Alice@example.com",),
    )
    assert route_for(note, config.policy()).name == "ours"


def test_the_policy_digest_follows_the_routes_and_windows_only() -> None:
    """The digest a reload's owed re-plan is stored under: the same for the same routes and
    windows, whatever else changed; another for other routes or windows."""
    routes = "  - name: pages\n    match: {severity: [critical]}\n    healthy: [email]\n    outage: [hook]\n"

    def digest(text: str) -> str:
        return parse_config(text + routes + LAST).policy_digest()

    first = digest(HEAD)
    assert digest(HEAD.replace("tok-SECRET-123456789", "tok-ROTATED-98765432")) == first
    assert digest(HEAD.replace('from: "22:00"', 'from: "23:00"')) != first
    assert parse_config(HEAD + routes.replace("[hook]", "[email]") + LAST).policy_digest() != first
