"""The status-API, generic HTTP and TCP checks against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import copy
import io
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from daemon.checks._http import ConfigError, HttpStatusCheck, StatusError
from daemon.checks.base import Check
from daemon.checks.google_workspace import GoogleWorkspaceCheck
from daemon.checks.graph import GraphCheck, GraphCredentials
from daemon.checks.http import HttpCheck, HttpCondition, same_json
from daemon.checks.statuspage import StatuspageCheck, summary_verdict
from daemon.checks.tcp import TcpCheck
from daemon.core.model import CheckResult, CheckStatus
from daemon.logs import configure_logging
from tests.integration.status_server import (
    FIXTURES,
    HOST,
    Reply,
    StatusServer,
    fixture,
    fixture_reply,
    json_reply,
    refusing_port,
)

OK, DEGRADED, DOWN = CheckStatus.OK, CheckStatus.DEGRADED, CheckStatus.DOWN
UNKNOWN, CREDENTIALS = CheckStatus.UNKNOWN, CheckStatus.CREDENTIALS
#: generous for a loaded 2-core machine; only the timeout tests use short ones
TIMEOUT_S = 10.0
SECRET = "s3cret~Graph~Value"
TENANT = "contoso.onmicrosoft.com"
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"
OVERVIEW_PATH = "/v1.0/admin/serviceAnnouncement/healthOverviews/Exchange Online"
ISSUES_PATH = "/v1.0/admin/serviceAnnouncement/issues"
SUMMARY_PATH = "/api/v2/summary.json"
GWS_PATH = "/appsstatus/dashboard/incidents.json"

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"shared provider-status fixtures not found at {FIXTURES}"
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[StatusServer]:
    async with StatusServer() as running:
        yield running


async def run_once(check: Check) -> CheckResult:
    try:
        return await check.run()
    finally:
        await check.aclose()


def token_reply(value: str = "tok-1", expires_in: int | str = 3599) -> Reply:
    return json_reply({"token_type": "Bearer", "expires_in": expires_in, "access_token": value})


def graph_check(server: StatusServer, clock: Callable[[], datetime] | None = None, **kw: Any) -> GraphCheck:
    credentials = GraphCredentials(TENANT, "app-id", SECRET)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    return GraphCheck(
        "graph",
        credentials,
        graph_base=server.url,
        login_base=server.url,
        timeout_s=TIMEOUT_S,
        **extra,
        **kw,
    )


def overview(status: str, issues: list[Any] | None = None, next_link: str | None = None) -> dict[str, Any]:
    doc = {"service": "Exchange Online", "status": status, "id": "Exchange", "issues": issues or []}
    return doc if next_link is None else {**doc, "issues@odata.nextLink": next_link}


def issue(classification: str = "incident", resolved: bool = False, ident: str = "EX1") -> dict[str, Any]:
    return {"id": ident, "title": "Mail delayed", "classification": classification, "isResolved": resolved}


# --- statuspage --------------------------------------------------------------------------------


@needs_fixtures
async def test_statuspage_major_indicator_is_down(server: StatusServer) -> None:
    """The summary's major indicator is down, and the reason names the open incident."""
    server.serve(SUMMARY_PATH, fixture_reply("statuspage_summary_incident.json"))
    result = await run_once(StatuspageCheck("sendgrid", server.url, timeout_s=TIMEOUT_S))
    assert result.status == DOWN
    assert "SendGrid: indicator major (Partial System Outage)" in result.reason
    assert "Delayed mail delivery (identified)" in result.reason
    assert server.requests_to(SUMMARY_PATH)


@needs_fixtures
async def test_statuspage_named_component_in_partial_outage_is_down(server: StatusServer) -> None:
    """A named component (any case) in partial_outage is down."""
    server.serve(SUMMARY_PATH, fixture_reply("statuspage_summary_incident.json"))
    check = StatuspageCheck("sg", server.url, components=["mail sending"], timeout_s=TIMEOUT_S)
    result = await run_once(check)
    assert result.status == DOWN
    assert "mail sending: partial_outage" in result.reason


@needs_fixtures
async def test_statuspage_narrowed_to_an_operational_component_is_ok(server: StatusServer) -> None:
    """Narrowed to a component that works, a page with an outage elsewhere is ok."""
    server.serve(SUMMARY_PATH, fixture_reply("statuspage_summary_incident.json"))
    result = await run_once(StatuspageCheck("sg", server.url, components=["API"], timeout_s=TIMEOUT_S))
    assert result.status == OK


@needs_fixtures
async def test_statuspage_all_operational_components_are_ok(server: StatusServer) -> None:
    """The components document with every component operational is ok."""
    server.serve("/api/v2/components.json", fixture_reply("statuspage_components_ok.json"))
    url = f"{server.url}/api/v2/components.json"
    result = await run_once(StatuspageCheck("sg", url, components=["c1"], timeout_s=TIMEOUT_S))
    assert result.status == OK, result.reason


@needs_fixtures
async def test_statuspage_status_document_major_is_down(server: StatusServer) -> None:
    """A URL ending in .json is used as given: status.json's major indicator is down."""
    server.serve("/api/v2/status.json", fixture_reply("statuspage_status_major.json"))
    check = StatuspageCheck("sg", f"{server.url}/api/v2/status.json", timeout_s=TIMEOUT_S)
    assert (await run_once(check)).status == DOWN


@needs_fixtures
async def test_statuspage_missing_component_is_unknown(server: StatusServer) -> None:
    """A component the page does not list is unknown, never ok."""
    server.serve(SUMMARY_PATH, fixture_reply("statuspage_summary_incident.json"))
    check = StatuspageCheck("sg", server.url, components=["API", "Webhooks"], timeout_s=TIMEOUT_S)
    result = await run_once(check)
    assert result.status == UNKNOWN
    assert "Webhooks: not on the page" in result.reason


@pytest.mark.parametrize(
    ("indicator", "expected"),
    [("none", OK), ("minor", DEGRADED), ("major", DOWN), ("critical", DOWN), ("MINOR", DEGRADED)],
)
def test_statuspage_indicator_maps_to_status(indicator: str, expected: CheckStatus) -> None:
    """Each documented indicator has its status."""
    status, _ = summary_verdict({"status": {"indicator": indicator}})
    assert status == expected


def test_statuspage_undocumented_indicator_is_unknown() -> None:
    """An indicator Statuspage never documented is unknown."""
    with pytest.raises(StatusError, match="unknown indicator 'purple'"):
        summary_verdict({"status": {"indicator": "purple"}})


@pytest.mark.parametrize(
    ("component_status", "expected"),
    [
        ("operational", OK),
        ("degraded_performance", DEGRADED),
        ("under_maintenance", DEGRADED),
        ("partial_outage", DOWN),
        ("major_outage", DOWN),
        ("on_fire", UNKNOWN),
    ],
)
def test_statuspage_component_status_maps_to_status(component_status: str, expected: CheckStatus) -> None:
    """Each component status has its status; an undocumented one is unknown."""
    doc = {"components": [{"id": "c1", "name": "Mail", "status": component_status}]}
    assert summary_verdict(doc, ["Mail"])[0] == expected


# --- Microsoft Graph ---------------------------------------------------------------------------


@needs_fixtures
async def test_graph_interruption_with_open_incident_is_down(server: StatusServer) -> None:
    """Exchange Online in serviceInterruption with an unresolved incident is down."""
    server.serve(TOKEN_PATH, token_reply("tok-A"))
    server.serve(OVERVIEW_PATH, fixture_reply("graph_healthoverview_exchange_with_issues.json"))
    result = await run_once(graph_check(server))
    assert result.status == DOWN
    assert "serviceInterruption" in result.reason
    assert "EX900001" in result.reason


@needs_fixtures
async def test_graph_requests_client_credentials_token_and_expands_issues(server: StatusServer) -> None:
    """The token is a client-credentials grant for Graph's .default scope, sent as a bearer."""
    server.serve(TOKEN_PATH, token_reply("tok-A"))
    server.serve(OVERVIEW_PATH, fixture_reply("graph_healthoverview_exchange_with_issues.json"))
    await run_once(graph_check(server))
    [token_request] = server.requests_to(TOKEN_PATH)
    assert token_request.method == "POST"
    assert token_request.form() == {
        "grant_type": "client_credentials",
        "client_id": "app-id",
        "client_secret": SECRET,
        "scope": f"{server.url}/.default",
    }
    [graph_request] = server.requests_to(OVERVIEW_PATH)
    assert graph_request.headers["authorization"] == "Bearer tok-A"
    assert graph_request.query == {"$expand": "issues"}


@needs_fixtures
async def test_graph_follows_issue_paging(server: StatusServer) -> None:
    """Issues are paged: an unresolved incident on the third page makes a degradation down."""
    page2 = fixture("graph_issues_restored.json")
    page2["@odata.nextLink"] = f"{server.url}{ISSUES_PATH}?$skip=200"
    page3 = {"value": [issue(ident="EX777")]}
    first = overview("serviceDegradation", next_link=f"{server.url}{ISSUES_PATH}?$skip=100")
    server.serve(TOKEN_PATH, token_reply())
    server.serve(OVERVIEW_PATH, json_reply(first))
    server.serve(ISSUES_PATH, json_reply(page2), json_reply(page3))
    result = await run_once(graph_check(server))
    assert result.status == DOWN, result.reason
    assert "EX777" in result.reason
    assert "EX900001" not in result.reason
    assert [r.query for r in server.requests_to(ISSUES_PATH)] == [{"$skip": "100"}, {"$skip": "200"}]


@needs_fixtures
async def test_graph_restored_service_with_resolved_incident_is_ok(server: StatusServer) -> None:
    """serviceRestored whose incident is resolved is ok."""
    issues = fixture("graph_issues_restored.json")["value"]
    server.serve(TOKEN_PATH, token_reply())
    server.serve(OVERVIEW_PATH, json_reply(overview("serviceRestored", issues)))
    result = await run_once(graph_check(server))
    assert result.status == OK, result.reason


@needs_fixtures
async def test_graph_pascalcase_status_is_read_case_insensitively(server: StatusServer) -> None:
    """Microsoft's documented PascalCase ServiceOperational is ok."""
    [entry] = fixture("graph_pascalcase_doc_variant.json")["value"]
    server.serve(TOKEN_PATH, token_reply())
    server.serve(OVERVIEW_PATH, json_reply(entry))
    result = await run_once(graph_check(server))
    assert result.status == OK, result.reason


@pytest.mark.parametrize(
    ("status", "issues", "expected"),
    [
        ("serviceOperational", [], OK),
        ("ServiceDegradation", [], DEGRADED),
        ("investigating", [issue("advisory")], DEGRADED),
        ("restoringService", [issue("Incident")], DOWN),
        ("extendedRecovery", [issue(resolved=True)], DEGRADED),
        ("serviceInterruption", [], DOWN),
        ("falsePositive", [], OK),
        ("postIncidentReviewPublished", [issue(resolved=True)], OK),
        ("serviceRestored", [issue()], DEGRADED),
        ("mitigatedExternal", [], UNKNOWN),
        ("somethingNew", [], UNKNOWN),
    ],
)
async def test_graph_status_and_incidents_map_to_status(
    server: StatusServer, status: str, issues: list[Any], expected: CheckStatus
) -> None:
    """Each overview status, with or without an unresolved incident, has its status."""
    server.serve(TOKEN_PATH, token_reply())
    server.serve(OVERVIEW_PATH, json_reply(overview(status, issues)))
    result = await run_once(graph_check(server))
    assert result.status == expected, result.reason


async def test_graph_token_is_cached_until_it_nearly_expires(server: StatusServer) -> None:
    """One token serves every run until shortly before its expiry; then a new one is fetched."""
    clock = Clock()
    server.serve(TOKEN_PATH, token_reply("tok-1", expires_in="3600"), token_reply("tok-2"))
    server.serve(OVERVIEW_PATH, json_reply(overview("serviceOperational")))
    check = graph_check(server, clock)
    try:
        for _ in range(3):
            assert (await check.run()).status == OK
            clock.now += timedelta(minutes=15)
        assert len(server.requests_to(TOKEN_PATH)) == 1
        clock.now += timedelta(minutes=14)
        assert (await check.run()).status == OK
    finally:
        await check.aclose()
    assert len(server.requests_to(TOKEN_PATH)) == 2
    assert server.requests_to(OVERVIEW_PATH)[-1].headers["authorization"] == "Bearer tok-2"


async def test_graph_refused_secret_is_credentials_without_the_secret(server: StatusServer) -> None:
    """A refused client secret is credentials, and the secret never reaches the reason."""
    refusal = {
        "error": "invalid_client",
        "error_description": f"AADSTS7000215: Invalid secret {SECRET}\nTrace",
    }
    server.serve(TOKEN_PATH, json_reply(refusal, status=401))
    result = await run_once(graph_check(server))
    assert result.status == CREDENTIALS
    assert "invalid_client: AADSTS7000215" in result.reason
    assert SECRET not in result.reason
    assert not server.requests_to(OVERVIEW_PATH)


async def test_graph_rejected_cached_token_is_renewed_once(server: StatusServer) -> None:
    """A cached token Graph refuses is dropped and the request retried with a fresh one."""
    server.serve(TOKEN_PATH, token_reply("tok-1"), token_reply("tok-2"))
    ok = json_reply(overview("serviceOperational"))
    server.serve(OVERVIEW_PATH, ok, json_reply({}, status=401), ok)
    check = graph_check(server)
    try:
        assert (await check.run()).status == OK
        assert (await check.run()).status == OK
    finally:
        await check.aclose()
    auths = [r.headers["authorization"] for r in server.requests_to(OVERVIEW_PATH)]
    assert auths == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


async def test_graph_forbidden_is_credentials(server: StatusServer) -> None:
    """403 (no ServiceHealth.Read.All consent) is credentials, naming the permission."""
    server.serve(TOKEN_PATH, token_reply())
    server.serve(OVERVIEW_PATH, json_reply({"error": {"code": "Forbidden"}}, status=403))
    result = await run_once(graph_check(server))
    assert result.status == CREDENTIALS
    assert "ServiceHealth.Read.All" in result.reason


async def test_graph_next_link_to_another_host_is_not_followed(server: StatusServer) -> None:
    """A nextLink off the Graph host is unknown: the bearer token is not sent there."""
    link = "https://elsewhere.example/v1.0/admin/serviceAnnouncement/issues?$skip=100"
    server.serve(TOKEN_PATH, token_reply())
    server.serve(OVERVIEW_PATH, json_reply(overview("serviceOperational", next_link=link)))
    result = await run_once(graph_check(server))
    assert result.status == UNKNOWN
    assert "elsewhere.example" in result.reason


async def test_graph_endless_paging_is_unknown(server: StatusServer) -> None:
    """A server that keeps linking pages is unknown after a bounded number of pages."""
    link = f"{server.url}{ISSUES_PATH}?$skip=1"
    server.serve(TOKEN_PATH, token_reply())
    server.serve(OVERVIEW_PATH, json_reply(overview("serviceOperational", next_link=link)))
    server.serve(ISSUES_PATH, json_reply({"value": [], "@odata.nextLink": link}))
    result = await run_once(graph_check(server))
    assert result.status == UNKNOWN
    assert "still paging" in result.reason


# --- Google Workspace --------------------------------------------------------------------------


def gws_check(server: StatusServer, product: str = "Gmail") -> GoogleWorkspaceCheck:
    url = f"{server.url}{GWS_PATH}"
    return GoogleWorkspaceCheck("gws", url=url, product=product, timeout_s=TIMEOUT_S)


def gmail_incident_edited(edit: Callable[[dict[str, Any]], None]) -> Callable[[Any], Any]:
    def apply(incidents: Any) -> Any:
        edited = copy.deepcopy(incidents)
        edit(edited[0])
        return edited

    return apply


@needs_fixtures
async def test_gws_active_gmail_outage_is_down(server: StatusServer) -> None:
    """An active Gmail SERVICE_OUTAGE is down."""
    server.serve(GWS_PATH, fixture_reply("gws_incidents_gmail_outage.json"))
    result = await run_once(gws_check(server))
    assert result.status == DOWN
    assert (
        result.reason
        == "Gmail: 1 active incident(s): SERVICE_OUTAGE: Users are unable to send or receive email."
    )


@needs_fixtures
async def test_gws_active_disruption_is_degraded(server: StatusServer) -> None:
    """An active Gmail SERVICE_DISRUPTION is degraded."""
    edit = gmail_incident_edited(lambda i: i["most_recent_update"].update(status="SERVICE_DISRUPTION"))
    server.serve(GWS_PATH, fixture_reply("gws_incidents_gmail_outage.json", edit))
    assert (await run_once(gws_check(server))).status == DEGRADED


@needs_fixtures
async def test_gws_ended_incident_is_ok(server: StatusServer) -> None:
    """A Gmail incident with an end is over: ok."""
    edit = gmail_incident_edited(lambda i: i.update(end="2026-03-02T11:00:00+00:00"))
    server.serve(GWS_PATH, fixture_reply("gws_incidents_gmail_outage.json", edit))
    result = await run_once(gws_check(server))
    assert result.status == OK
    assert result.reason == "Gmail: no active incident"


@needs_fixtures
async def test_gws_other_products_do_not_count(server: StatusServer) -> None:
    """An active incident on another product leaves Google Chat (resolved only) ok."""
    server.serve(GWS_PATH, fixture_reply("gws_incidents_gmail_outage.json"))
    assert (await run_once(gws_check(server, product="google chat"))).status == OK


async def test_gws_undocumented_impact_is_unknown(server: StatusServer) -> None:
    """An active incident whose impact Google never documented is unknown."""
    incident = {"id": "x", "service_name": "Gmail", "status_impact": "SERVICE_WOBBLY"}
    server.serve(GWS_PATH, json_reply([incident]))
    assert (await run_once(gws_check(server))).status == UNKNOWN


async def test_gws_document_not_an_array_is_unknown(server: StatusServer) -> None:
    """incidents.json that is not an array is unknown."""
    server.serve(GWS_PATH, json_reply({"incidents": []}))
    result = await run_once(gws_check(server))
    assert result.status == UNKNOWN
    assert "expected an array" in result.reason


# --- every status check: transport and format failures are unknown ---------------------------

StatusFactory = Callable[[str, float], HttpStatusCheck]

STATUS_CHECKS: dict[str, StatusFactory] = {
    "statuspage": lambda url, t: StatuspageCheck("sp", url, timeout_s=t),
    "google_workspace": lambda url, t: GoogleWorkspaceCheck("gws", url=url + "/i.json", timeout_s=t),
    "graph": lambda url, t: GraphCheck(
        "graph", GraphCredentials(TENANT, "app", SECRET), graph_base=url, login_base=url, timeout_s=t
    ),
    "http": lambda url, t: HttpCheck(
        "http", url + "/i.json", condition=HttpCondition(path="ok", accepted=(True,)), timeout_s=t
    ),
}
STATUS_PATHS = {"statuspage": SUMMARY_PATH, "google_workspace": "/i.json", "graph": OVERVIEW_PATH}


@pytest.fixture(params=sorted(STATUS_CHECKS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def script(server: StatusServer, kind: str, reply: Reply) -> None:
    server.serve(TOKEN_PATH, token_reply())
    server.serve(STATUS_PATHS.get(kind, "/i.json"), reply)


async def test_not_found_is_unknown(server: StatusServer, kind: str) -> None:
    """A 404 from the status endpoint is unknown, never ok."""
    script(server, kind, json_reply({"error": "not found"}, status=404))
    result = await run_once(STATUS_CHECKS[kind](server.url, TIMEOUT_S))
    assert result.status == UNKNOWN
    assert "404" in result.reason


async def test_malformed_json_is_unknown(server: StatusServer, kind: str) -> None:
    """A body that is not JSON is unknown, never ok."""
    script(server, kind, Reply(body=b'{"status": {"indicator": "none"'))
    result = await run_once(STATUS_CHECKS[kind](server.url, TIMEOUT_S))
    assert result.status == UNKNOWN
    assert "not JSON" in result.reason


async def test_server_error_is_unknown(server: StatusServer, kind: str) -> None:
    """A 503 from a status API is unknown (the http check, whose URL is the target, says down)."""
    script(server, kind, Reply(status=503, body=b"busy"))
    result = await run_once(STATUS_CHECKS[kind](server.url, TIMEOUT_S))
    assert result.status == (DOWN if kind == "http" else UNKNOWN)


async def test_timeout_is_unknown_within_the_timeout(server: StatusServer, kind: str) -> None:
    """An endpoint that does not answer in time is unknown, and the run ends near its timeout."""
    script(server, kind, Reply(delay_s=60))
    result = await run_once(STATUS_CHECKS[kind](server.url, 0.5))
    assert result.status == UNKNOWN
    assert "timed out" in result.reason
    assert result.latency_s < 5


async def test_dropped_connection_is_unknown(server: StatusServer, kind: str) -> None:
    """A connection closed without an answer is unknown."""
    script(server, kind, Reply(drop=True))
    assert (await run_once(STATUS_CHECKS[kind](server.url, TIMEOUT_S))).status == UNKNOWN


async def test_unreachable_endpoint_is_unknown(kind: str) -> None:
    """A refused connection is unknown: it says nothing about the provider."""
    with refusing_port() as port:
        result = await run_once(STATUS_CHECKS[kind](f"http://{HOST}:{port}", TIMEOUT_S))
    assert result.status == UNKNOWN


async def test_status_checks_meet_the_check_protocol(kind: str) -> None:
    """Every status check is a Check."""
    check = STATUS_CHECKS[kind]("http://127.0.0.1:9", TIMEOUT_S)
    assert isinstance(check, Check)
    await check.aclose()


async def test_injected_client_is_used_and_left_open(server: StatusServer) -> None:
    """An injected client serves the check, and aclose leaves it to its owner."""
    server.serve(SUMMARY_PATH, json_reply({"status": {"indicator": "none"}}))
    async with httpx.AsyncClient() as client:
        check = StatuspageCheck("sp", server.url, client=client, timeout_s=TIMEOUT_S)
        assert (await run_once(check)).status == OK
        assert not client.is_closed


# --- generic HTTP ------------------------------------------------------------------------------


def http_check(server: StatusServer, condition: HttpCondition, **kw: Any) -> HttpCheck:
    return HttpCheck("http", f"{server.url}/health", condition=condition, timeout_s=TIMEOUT_S, **kw)


async def test_a_check_request_logs_no_line_of_its_own(server: StatusServer) -> None:
    """A check's request adds no httpx INFO line to the daemon's log, so its URL's query stays out."""
    server.serve("/health", json_reply({"ok": True}))
    url = f"{server.url}/health?api_key=status-key-8d1f"
    root, httpx_log = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, httpx_level = list(root.handlers), root.level, httpx_log.level
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        check = HttpCheck(
            "http", url, condition=HttpCondition(path="ok", accepted=(True,)), timeout_s=TIMEOUT_S
        )
        result = await run_once(check)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        httpx_log.setLevel(httpx_level)
    assert result.status == OK
    assert "status-key-8d1f" not in out.getvalue()
    assert '"logger":"httpx"' not in out.getvalue()


async def test_http_condition_that_holds_is_ok(server: StatusServer) -> None:
    """The expected status and a value in the accepted set is ok."""
    server.serve("/health", json_reply({"checks": [{"state": "green"}]}))
    condition = HttpCondition(path="checks.0.state", accepted=("green", "yellow"))
    result = await run_once(http_check(server, condition))
    assert result.status == OK
    assert 'checks.0.state = "green"' in result.reason


async def test_http_value_that_differs_is_down(server: StatusServer) -> None:
    """A value outside the accepted set is down, naming what was expected."""
    server.serve("/health", json_reply({"status": "red"}))
    result = await run_once(http_check(server, HttpCondition(path="status", accepted=("green",))))
    assert result.status == DOWN
    assert 'status = "red", expected "green"' in result.reason


async def test_http_status_code_only_is_checked_without_a_path(server: StatusServer) -> None:
    """Without a path only the status code counts, and the body need not be JSON."""
    server.serve("/health", Reply(status=204))
    assert (await run_once(http_check(server, HttpCondition(expect_status=204)))).status == OK


async def test_http_missing_path_is_unknown(server: StatusServer) -> None:
    """A path the document does not have is unknown: the shape changed, not the service."""
    server.serve("/health", json_reply({"status": "green"}))
    result = await run_once(http_check(server, HttpCondition(path="state.color", accepted=("green",))))
    assert result.status == UNKNOWN


async def test_http_unauthorized_is_credentials(server: StatusServer) -> None:
    """401 when 200 was expected is credentials, with the configured headers sent."""
    server.serve("/health", json_reply({"error": "unauthorized"}, status=401))
    check = http_check(server, HttpCondition(), headers={"Authorization": "Bearer abc123"})
    assert (await run_once(check)).status == CREDENTIALS
    assert server.requests_to("/health")[0].headers["authorization"] == "Bearer abc123"


async def test_http_header_values_never_reach_the_reason(server: StatusServer) -> None:
    """A header value the endpoint echoes back is masked in the reason."""
    server.serve("/health", json_reply({"status": "key abc123secret rejected"}))
    condition = HttpCondition(path="status", accepted=("green",))
    result = await run_once(http_check(server, condition, headers={"X-Api-Key": "abc123secret"}))
    assert result.status == DOWN
    assert "abc123secret" not in result.reason
    assert "key *** rejected" in result.reason


def test_json_comparison_keeps_types_apart() -> None:
    """true is not 1 and "1" is not 1, while 1 equals 1.0."""
    assert not same_json(True, 1)
    assert not same_json("1", 1)
    assert not same_json(None, False)
    assert same_json(1, 1.0)
    assert same_json(None, None)


@pytest.mark.parametrize(
    "kwargs",
    [{"path": "status"}, {"accepted": ("ok",)}, {"path": "a..b", "accepted": ("ok",)}, {"expect_status": 42}],
)
def test_http_condition_rejects_incomplete_settings(kwargs: dict[str, Any]) -> None:
    """A path needs values, values need a path, segments are not empty, status codes are real."""
    with pytest.raises(ConfigError):
        HttpCondition(**kwargs)


def test_checks_reject_relative_urls() -> None:
    """A URL without scheme and host is a configuration error at construction."""
    with pytest.raises(ConfigError):
        StatuspageCheck("sp", "status.example.com", timeout_s=1)


# --- TCP control targets -----------------------------------------------------------------------


async def test_tcp_connect_is_ok(server: StatusServer) -> None:
    """A port that accepts is ok."""
    result = await run_once(TcpCheck("control", HOST, server.port, timeout_s=TIMEOUT_S))
    assert result.status == OK
    assert isinstance(TcpCheck("c", HOST, 1, timeout_s=1), Check)


async def test_tcp_refused_is_down() -> None:
    """A refused connection to a control target is down."""
    with refusing_port() as port:
        result = await run_once(TcpCheck("control", HOST, port, timeout_s=TIMEOUT_S))
    assert result.status == DOWN
    assert "refused" in result.reason.lower()


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listener that never accepts, its accept queue filled: Linux drops further SYNs."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex((HOST, port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_tcp_silent_target_is_down_within_the_timeout(full_backlog: int) -> None:
    """A target that never completes the handshake is down after the timeout."""
    result = await run_once(TcpCheck("control", HOST, full_backlog, timeout_s=0.5))
    assert result.status == DOWN, result.reason
    assert "no connection within 0.5s" in result.reason
    assert result.latency_s < 5


async def test_results_carry_the_injected_clock(server: StatusServer) -> None:
    """A result's time is the injected clock's, so virtual time reaches the health tracker."""
    clock = Clock()
    result = await run_once(TcpCheck("control", HOST, server.port, timeout_s=TIMEOUT_S, clock=clock))
    assert result.at == clock.now
