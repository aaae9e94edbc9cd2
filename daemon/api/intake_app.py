"""The intake-only HTTP app an intake worker serves (``intake.workers``, docs/intake.md).

The same endpoints, behaviour and error bodies as on the API port: ``POST /v1/notifications``,
``POST /v1/intake/alertmanager``, ``POST /v1/intake/grafana``, and ``GET /healthz`` for load
balancers. Everything else is a 404 that points at the API port: a worker has no provider state,
no delivery and no status page, only the store to commit to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from daemon.api.auth import BearerAuth, Grant
from daemon.api.limits import BodyLimit
from daemon.api.submit import PATH, RETRY_AFTER_S, SubmitEndpoint, error, send_reply
from daemon.api.webhooks import WebhookEndpoint, WebhookIntake
from daemon.intake.accept import Acceptor
from daemon.intake.webhook_config import WebhookSettings


def create_intake_api(
    acceptor: Acceptor,
    *,
    tokens: Callable[[], Mapping[str, str]],
    grants: Callable[[], Mapping[str, Grant]],
    webhooks: Callable[[], WebhookSettings],
    draining: Callable[[], bool],
    max_body_bytes: int,
) -> ASGIApp:
    submit = SubmitEndpoint(acceptor, BearerAuth(tokens, grants), draining)
    hooks = WebhookEndpoint(WebhookIntake(acceptor, tokens, draining, webhooks, grants))
    return BodyLimit(_IntakeRouter(submit, hooks, draining), max_body_bytes)


class _IntakeRouter:
    def __init__(
        self, submit: SubmitEndpoint, webhooks: WebhookEndpoint, draining: Callable[[], bool]
    ) -> None:
        self._submit = submit
        self._webhooks = webhooks
        self._draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == PATH:
            await self._submit(scope, receive, send)
        elif self._webhooks.handles(scope):
            await self._webhooks(scope, receive, send)
        elif path == "/healthz" and method == "GET":
            await send_reply(send, self._health())
        elif path in (PATH, "/healthz") or self._webhooks.handles({**scope, "method": "POST"}):
            await send_reply(send, error(405, "method_not_allowed", f"{method} is not allowed on {path}"))
        else:
            message = f"{path} is not served on the intake workers' port; use the API port"
            await send_reply(send, error(404, "not_found", message))

    def _health(self) -> tuple[int, dict[str, object], dict[str, str]]:
        if self._draining():
            return error(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        return 200, {"status": "ok", "role": "intake"}, {}
