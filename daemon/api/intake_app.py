"""What an intake worker serves (``intake.workers``, docs/intake.md), as a handler for
:mod:`daemon.api.lean_http`.

The same endpoints, behaviour and error bodies as on the API port: ``POST /v1/notifications``,
``POST /v1/intake/alertmanager``, ``POST /v1/intake/grafana``, and ``GET /healthz`` (and ``HEAD``) for load
balancers (503 while draining, or while the worker's store does not commit: its own accepts,
and its probes while it has none, :mod:`daemon.store_health`). Everything else is a 404 that
points at the API port: a worker has no provider state, no delivery and no status page, only
the store to commit to.

The three POST endpoints need credentials, and the server asks :meth:`IntakeApp.screen` for them
as soon as a request's headers are in: a request they refuse is answered before any of its body
is read (then closed, if a body was to follow), and one they admit is answered once its body is in
by what the screen admitted it to, so the token is checked once a request. The handler itself
checks them too, for a server that does not screen.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.api.auth import BearerAuth
from daemon.api.errors import RETRY_AFTER_S
from daemon.api.lean_messages import Reply, Respond
from daemon.api.submit import PATH, SubmitEndpoint, error
from daemon.api.views import store_unavailable
from daemon.api.webhooks import ALERTMANAGER_PATH, GRAFANA_PATH, WebhookIntake
from daemon.intake.accept import Acceptor
from daemon.store_health import StoreHealth

HEALTH_PATH = "/healthz"


class IntakeApp:
    """The workers' endpoints: :meth:`__call__` is the lean server's handler, :meth:`screen` its screen."""

    def __init__(
        self,
        acceptor: Acceptor,
        *,
        gate: BearerAuth,
        hooks: WebhookIntake,
        draining: Callable[[], bool],
        store: StoreHealth,
    ) -> None:
        """``gate``: the tokens, and the rate limits the daemon shares with its workers; ``hooks``:
        the alert webhooks, on the same gate; ``store``: whether this worker's store commits."""
        submit = SubmitEndpoint(acceptor, gate, draining)
        #: each POST endpoint's credentials, from the headers: the refusal, or what answers the request
        self._screens: dict[str, Callable[[dict[str, str]], Reply | Respond]] = {
            PATH: submit.screen,
            ALERTMANAGER_PATH: _webhook(hooks, ALERTMANAGER_PATH),
            GRAFANA_PATH: _webhook(hooks, GRAFANA_PATH),
        }
        self._draining = draining
        self._store = store

    def screen(self, method: str, path: str, headers: dict[str, str]) -> Reply | Respond | None:
        """A POST endpoint's refusal from the headers, or what answers it; None for the rest."""
        screen = self._screens.get(path) if method == "POST" else None
        return None if screen is None else screen(headers)

    async def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        posts = self._screens
        if method == "POST" and path in posts:
            outcome = posts[path](headers)
            return outcome if isinstance(outcome, tuple) else await outcome(headers, body)
        if method in ("GET", "HEAD") and path == HEALTH_PATH:
            return await self._healthz()
        if path in posts or path == HEALTH_PATH:
            allow = "POST" if path in posts else "GET, HEAD"
            return error(
                405, "method_not_allowed", f"{method} is not allowed on {path}", headers={"Allow": allow}
            )
        if path.endswith("/") and (path[:-1] in posts or path[:-1] == HEALTH_PATH):
            return error(404, "not_found", f"no {path}: the path has no trailing slash ({path[:-1]})")
        return error(404, "not_found", f"{path} is not served on the intake workers' port; use the API port")

    async def _healthz(self) -> Reply:
        if self._draining():
            return error(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        failing = await self._store.verdict()
        if failing is not None:
            message = store_unavailable(failing)
            return error(503, "store_unavailable", message, headers={"Retry-After": RETRY_AFTER_S})
        return 200, {"status": "ok", "role": "intake"}, {}


def _webhook(hooks: WebhookIntake, path: str) -> Callable[[dict[str, str]], Reply | Respond]:
    """An alert webhook's screen: its admitted calls are answered from the body alone."""

    def screen(headers: dict[str, str]) -> Reply | Respond:
        call = hooks.screen(path, headers.get("authorization", ""))
        return call if isinstance(call, tuple) else lambda _headers, body: call(body)

    return screen
