"""The Microsoft 365 service health check, through Microsoft Graph.

``GET {graph}/v1.0/admin/serviceAnnouncement/healthOverviews/{service}?$expand=issues``
(https://learn.microsoft.com/en-us/graph/api/servicehealth-get), with an app-only token for the
application permission ``ServiceHealth.Read.All``, obtained by the OAuth 2.0 client-credentials
grant (https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow).

Why a plain httpx token request and not msal: msal is synchronous (it would need a thread per
call) and brings requests, PyJWT and cryptography, while a client-secret grant is one form POST.
httpx is already the daemon's HTTP stack, so the token call gets the same injected client, the
same timeouts and the same loopback tests; the token is cached here until shortly before it
expires, which is all msal's cache would do for this flow.

Status values are read case-insensitively (Microsoft's own examples print ``ServiceOperational``).
Only unresolved issues of classification ``incident`` count; advisories are informational. Expanded
issues are paged with ``issues@odata.nextLink`` then ``@odata.nextLink``; links are followed only
to the Graph host, so the bearer token never leaves it.

==============================================================  ==========  ==========================
overview status                                                 no incident  an unresolved incident
==============================================================  ==========  ==========================
serviceOperational, serviceRestored, falsePositive,             OK          DEGRADED (the overview
postIncidentReviewPublished, investigationSuspended                         and the issues disagree)
serviceDegradation, investigating, restoringService,            DEGRADED    DOWN
verifyingService, extendedRecovery
serviceInterruption                                             DOWN        DOWN
anything else (reserved values, new ones)                       UNKNOWN     UNKNOWN
==============================================================  ==========  ==========================

A refused token (400/401 from the token endpoint) or a 401/403 from Graph is CREDENTIALS: the
secret or the admin consent needs renewing. The client secret is never part of a reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

import httpx

from daemon.checks._http import (
    ConfigError,
    Fetched,
    HttpStatusCheck,
    StatusError,
    Verdict,
    as_dict,
    as_list,
    as_str,
    checked_url,
    fetch,
    one_line,
    parse_json,
    require_success,
    utc_now,
)
from daemon.core.model import CheckStatus

GRAPH_BASE = "https://graph.microsoft.com"
LOGIN_BASE = "https://login.microsoftonline.com"
#: refresh this long before the token's own expiry, so a run never presents one that lapses in flight
TOKEN_MARGIN = timedelta(minutes=2)
#: a service has a handful of issues; this only stops a server that links pages in a loop
MAX_PAGES = 20

CALM = frozenset(
    {"serviceoperational", "servicerestored", "falsepositive", "postincidentreviewpublished"}
    | {"investigationsuspended"}
)
DEGRADED = frozenset(
    {"servicedegradation", "investigating", "restoringservice", "verifyingservice", "extendedrecovery"}
)
DOWN = frozenset({"serviceinterruption"})


@dataclass(frozen=True, slots=True)
class GraphCredentials:
    tenant: str
    client_id: str
    client_secret: str


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: datetime


class GraphCheck(HttpStatusCheck):
    def __init__(
        self,
        name: str,
        credentials: GraphCredentials,
        *,
        service: str = "Exchange Online",
        graph_base: str = GRAPH_BASE,
        login_base: str = LOGIN_BASE,
        scope: str | None = None,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not all((credentials.tenant, credentials.client_id, credentials.client_secret, service)):
            raise ConfigError(f"check {name}: tenant, client_id, client_secret and service are required")
        self._credentials = credentials
        self.service = service
        self.graph_base = checked_url(graph_base, f"check {name}: graph_base").rstrip("/")
        login = checked_url(login_base, f"check {name}: login_base").rstrip("/")
        self.token_url = f"{login}/{quote(credentials.tenant, safe='')}/oauth2/v2.0/token"
        self.scope = scope or f"{self.graph_base}/.default"
        self.overview_url = (
            f"{self.graph_base}/v1.0/admin/serviceAnnouncement/healthOverviews/"
            f"{quote(service, safe='')}?$expand=issues"
        )
        self._token: _Token | None = None
        super().__init__(name, timeout_s=timeout_s, client=client, clock=clock, monotonic=monotonic)

    async def verdict(self) -> Verdict:
        overview = as_dict(await self._get(self.overview_url), "healthOverview")
        issues = as_list(overview.get("issues", []), "healthOverview issues")
        next_link = overview.get("issues@odata.nextLink")
        for _ in range(MAX_PAGES):
            if next_link is None:
                return overview_verdict(overview, issues)
            page = as_dict(await self._get(self._followable(next_link)), "issues page")
            issues = [*issues, *as_list(page.get("value"), "issues page value")]
            next_link = page.get("@odata.nextLink")
        raise StatusError(f"issues still paging after {MAX_PAGES} pages")

    def redact(self, reason: str) -> str:
        return reason.replace(self._credentials.client_secret, "***")

    async def _get(self, url: str) -> object:
        """GET with the bearer token; one retry with a fresh token if a cached one is refused."""
        cached = self._token is not None
        fetched = await self._authorized_get(url)
        if fetched.status_code == 401 and cached:
            self._token = None
            fetched = await self._authorized_get(url)
        if fetched.status_code == 401:
            self._token = None
            raise StatusError(f"{fetched.url}: Graph refused the token (401)", status=CheckStatus.CREDENTIALS)
        if fetched.status_code == 403:
            raise StatusError(
                f"{fetched.url}: forbidden (403): grant the application ServiceHealth.Read.All "
                "with admin consent",
                status=CheckStatus.CREDENTIALS,
            )
        return parse_json(require_success(fetched))

    async def _authorized_get(self, url: str) -> Fetched:
        headers = {"Authorization": f"Bearer {await self._access_token()}", "Accept": "application/json"}
        return await fetch(self.client, "GET", url, timeout_s=self.timeout_s, headers=headers)

    async def _access_token(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._token.expires_at - TOKEN_MARGIN:
            return self._token.value
        form = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
            "scope": self.scope,
        }
        fetched = await fetch(self.client, "POST", self.token_url, timeout_s=self.timeout_s, data=form)
        self._token = token_from(fetched, now)
        return self._token.value

    def _followable(self, link: object) -> str:
        url = as_str(link, "@odata.nextLink")
        try:
            target, base = httpx.URL(url), httpx.URL(self.graph_base)
        except httpx.InvalidURL as exc:
            raise StatusError(f"@odata.nextLink is not a URL: {exc}") from exc
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            raise StatusError(f"refusing to send the token to {target.host!r}: @odata.nextLink left Graph")
        return url


def token_from(fetched: Fetched, now: datetime) -> _Token:
    """The token in a token endpoint's answer; a refusal is CREDENTIALS, anything odd UNKNOWN."""
    if fetched.status_code in (400, 401):
        raise StatusError(_refusal(fetched), status=CheckStatus.CREDENTIALS)
    body = as_dict(parse_json(require_success(fetched)), "token response")
    token = as_str(body.get("access_token"), "token response access_token")
    expires_in = body.get("expires_in")
    # the v1 endpoint sent expires_in as a string; accept both rather than fail on a number's type
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        raise StatusError(f"token response: bad expires_in {expires_in!r}")
    return _Token(token, now + timedelta(seconds=expires_in))


def _refusal(fetched: Fetched) -> str:
    try:
        body = parse_json(fetched)
    except StatusError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    detail = body.get("error_description") if isinstance(body, dict) else None
    # the description's first line carries the AADSTS code; the rest is trace and correlation ids
    first = detail.splitlines()[0] if isinstance(detail, str) and detail else ""
    what = f"{error}: {one_line(first, 160)}" if error else f"HTTP {fetched.status_code}"
    return f"token refused ({what}): renew the client secret or check the app registration"


def overview_verdict(overview: Mapping[str, object], issues: list[object]) -> Verdict:
    """The verdict for one service's health overview and all of its issues."""
    service = overview.get("service")
    status = as_str(overview.get("status"), "healthOverview status")
    incidents = unresolved_incidents(issues)
    key = status.lower()
    named = f"{service if isinstance(service, str) else 'service'}: {status}"
    if incidents:
        named += "; unresolved incident(s): " + "; ".join(incidents)
    if key in DOWN:
        return CheckStatus.DOWN, named
    if key in DEGRADED:
        return (CheckStatus.DOWN if incidents else CheckStatus.DEGRADED), named
    if key in CALM:
        return (CheckStatus.DEGRADED if incidents else CheckStatus.OK), named
    return CheckStatus.UNKNOWN, f"{named} (undocumented status)"


def unresolved_incidents(issues: list[object]) -> list[str]:
    """``id: title`` of each issue that is an incident and not resolved; advisories do not count."""
    found = []
    for raw in issues:
        issue = as_dict(raw, "issue")
        classification = as_str(issue.get("classification"), "issue classification")
        resolved = issue.get("isResolved")
        if not isinstance(resolved, bool):
            raise StatusError(f"issue {issue.get('id', '?')}: isResolved is {resolved!r}, not a boolean")
        if classification.lower() == "incident" and not resolved:
            found.append(f"{issue.get('id', '?')}: {one_line(str(issue.get('title', '')), 100)}")
    return found
