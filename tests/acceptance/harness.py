"""Start ``backchannel run`` as a real process with a YAML file, talk to it over HTTP, kill it."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TOKEN = "acceptance-token-3f9c2b"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"acceptance-webhook-secret-0123456789").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def until(predicate: Callable[[], Any], deadline_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {deadline_s}s")
        time.sleep(0.05)


CONFIG = """\
store: {{path: {store}}}
api:
  listen: 127.0.0.1:{api_port}
  tokens: [{{name: acceptance, token: "${{BC_TOKEN}}"}}]
provider:
  name: test-provider
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, timeout: 2s}}
  mail_from: backchannel@test.example
  checks: [{{type: smtp, every: {every}, timeout: 250ms}}]
  failure_threshold: 3
  success_threshold: 3
channels:
  email: {{type: email, to: [oncall@test.example], concurrency: 4}}
  hook:
    type: webhook
    url: "{hook_url}"
    secret: "${{BC_WEBHOOK_SECRET}}"
    concurrency: 8
    allow_private: true
routes:
{routes}
dispatch:
  poll: 200ms
  retry: {{initial: 100ms, max: 1s, max_attempts: 50}}
{extra}
"""

FAILOVER_ROUTES = """\
  - name: critical
    match: {severity: [critical, high]}
    healthy: [email]
    outage: [hook]
  - name: rest
    match: {}
    healthy: [email]
    outage: defer
"""

WEBHOOK_ONLY_ROUTES = """\
  - name: all
    match: {}
    healthy: [hook]
    outage: [hook]
"""


class DaemonProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        smtp_port: int,
        hook_url: str,
        routes: str = FAILOVER_ROUTES,
        every: str = "300ms",
        extra: str = "",
    ) -> None:
        self.workdir = workdir
        self.api_port = free_port()
        self.config_path = workdir / "backchannel.yaml"
        self._settings = {
            "store": workdir / "outbox.db",
            "api_port": self.api_port,
            "smtp_port": smtp_port,
            "hook_url": hook_url,
            "every": every,
            "extra": extra,
        }
        self.write_config(routes)
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )

    def write_config(self, routes: str) -> None:
        self.config_path.write_text(CONFIG.format(routes=routes, **self._settings))

    def start(self, wait: bool = True, **extra_env: str) -> None:
        env = dict(os.environ, BC_TOKEN=TOKEN, BC_WEBHOOK_SECRET=WEBHOOK_SECRET, **extra_env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if wait:
            until(self._ready, 20, "daemon readiness")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self.client.close()
        if self.log_path.exists():
            log = self.log_path.read_text()
            assert TOKEN not in log, "the API token reached the daemon's log"
            assert WEBHOOK_SECRET not in log, "the webhook secret reached the daemon's log"

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.client.get("/v1/status").json()
        return data

    def provider_state(self) -> str:
        state: str = self.status()["provider"]["state"]
        return state

    def notification(self, notification_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.client.get(f"/v1/notifications/{notification_id}").json()
        return data

    def send(self, severity: str, subject: str, **extra: Any) -> str:
        response = self.client.post(
            "/v1/notifications", json={"severity": severity, "subject": subject, **extra}
        )
        assert response.status_code == 202, response.text
        notification_id: str = response.json()["id"]
        return notification_id
