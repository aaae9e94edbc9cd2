"""What an intake worker serves (``intake.workers``, docs/intake.md), as a handler for
:mod:`daemon.api.lean_http`.

The same endpoints, behaviour and error bodies as on the API port: ``POST /v1/notifications``,
``POST /v1/intake/alertmanager``, ``POST /v1/intake/grafana``, and ``GET /healthz`` (and ``HEAD``) for load
balancers (503 while draining, or while the worker's store does not commit: its own accepts,
and its probes while it has none, :mod:`daemon.store_health`). Everything else is a 404 that
points at the API port: a worker has no provider state, no delivery and no status page, only
the store to commit to.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.api.auth import BearerAuth
from daemon.api.errors import RETRY_AFTER_S
from daemon.api.lean_connection import Handler
from daemon.api.lean_messages import Reply
from daemon.api.submit import PATH, SubmitEndpoint, error
from daemon.api.views import store_unavailable
from daemon.api.webhooks import ALERTMANAGER_PATH, GRAFANA_PATH, WebhookIntake
from daemon.intake.accept import Acceptor
from daemon.store_health import StoreHealth

HEALTH_PATH = "/healthz"


def intake_handler(
    acceptor: Acceptor,
    *,
    gate: BearerAuth,
    hooks: WebhookIntake,
    draining: Callable[[], bool],
    store: StoreHealth,
) -> Handler:
    """``gate``: the tokens, and the rate limits the daemon shares with its workers; ``hooks``:
    the alert webhooks, on the same gate; ``store``: whether this worker's store commits."""
    submit = SubmitEndpoint(acceptor, gate, draining)
    posts = {
        ALERTMANAGER_PATH: lambda headers, body: hooks.alertmanager(headers.get("authorization", ""), body),
        GRAFANA_PATH: lambda headers, body: hooks.grafana(headers.get("authorization", ""), body),
        PATH: submit.handle,
    }

    async def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if method == "POST" and path in posts:
            return await posts[path](headers, body)
        if method in ("GET", "HEAD") and path == HEALTH_PATH:
            return await healthz()
        if path in posts or path == HEALTH_PATH:
            allow = "POST" if path in posts else "GET, HEAD"
            return error(
                405, "method_not_allowed", f"{method} is not allowed on {path}", headers={"Allow": allow}
            )
        if path.endswith("/") and (path[:-1] in posts or path[:-1] == HEALTH_PATH):
            return error(404, "not_found", f"no {path}: the path has no trailing slash ({path[:-1]})")
        return error(404, "not_found", f"{path} is not served on the intake workers' port; use the API port")

    async def healthz() -> Reply:
        if draining():
            return error(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        failing = await store.verdict()
        if failing is not None:
            message = store_unavailable(failing)
            return error(503, "store_unavailable", message, headers={"Retry-After": RETRY_AFTER_S})
        return 200, {"status": "ok", "role": "intake"}, {}

    return handle
