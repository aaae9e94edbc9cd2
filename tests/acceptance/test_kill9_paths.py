"""kill -9 of the daemon mid-burst on every intake path, on SQLite and on PostgreSQL.

The API port on SQLite is covered at length by ``test_kill9``; here each other way in (the intake
workers' port, the Alertmanager webhook's batches, the SMTP smart host's concurrent clients) and
the API port on PostgreSQL, each on one store (every path on both took 140 s, too much of the
suite's time): every acknowledged item (202, or the 250 its client saw) is delivered after the
restart, and each repeat carries the idempotency key its first send had (``webhook-id``,
``Message-ID``).
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import TOKEN, WEBHOOK_ONLY_ROUTES, DaemonProcess, free_port, until
from tests.acceptance.test_ha import HaNode
from tests.integration.conftest import postgres_server, postgres_url
from tests.servers import SmtpServer, WebhookReceiver

__all__ = ["postgres_server", "postgres_url"]  # fixtures, used by name

TOTAL = 240
BATCH = 10
KILLS = 2
THREADS = 6

#: posts (or mails) one chunk of keys, calling the second argument with each key acknowledged;
#: False when the daemon refused
Submit = Callable[[list[str], Callable[[str], None]], bool]


class Burst:
    """Submits every key not yet acknowledged from a few threads; a refused or cut call ends a thread."""

    def __init__(self, submit: Submit) -> None:
        self.submit = submit
        self.acked: set[str] = set()
        self.lock = threading.Lock()

    def run(self, keys: list[str], chunk: int = BATCH) -> None:
        chunks = [keys[i : i + chunk] for i in range(0, len(keys), chunk)]
        workers = [threading.Thread(target=self._run, args=(chunks[n::THREADS],)) for n in range(THREADS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _run(self, chunks: list[list[str]]) -> None:
        for keys in chunks:
            try:
                if not self.submit(keys, self._ack):
                    return
            except (httpx.TransportError, smtplib.SMTPException, OSError):
                return  # the daemon was killed: whatever was not acknowledged is sent again later

    def _ack(self, key: str) -> None:
        with self.lock:
            self.acked.add(key)


def _post(url: str, body: Callable[[list[str]], object]) -> Submit:
    def submit(keys: list[str], ack: Callable[[str], None]) -> bool:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if httpx.post(url, json=body(keys), headers=headers, timeout=10).status_code != 202:
            return False
        for key in keys:
            ack(key)
        return True

    return submit


def _notifications(keys: list[str]) -> object:
    return [{"severity": "critical", "subject": key, "idempotency_key": key} for key in keys]


def _alertmanager(keys: list[str]) -> object:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": key, "severity": "critical"},
            "annotations": {"summary": key},
            "startsAt": "2024-02-06T12:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": key,
        }
        for key in keys
    ]
    return {
        "version": "4",
        "groupKey": f"{{}}:{{batch={keys[0]!r}}}",
        "status": "firing",
        "receiver": "backchannel",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    }


def _mail(port: int) -> Submit:
    def submit(keys: list[str], ack: Callable[[str], None]) -> bool:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            for key in keys:
                msg = EmailMessage()
                msg["From"] = "app@example.com"
                msg["To"] = "oncall@example.com"
                msg["Subject"] = key
                msg["Message-ID"] = f"<{key}@app.example.com>"
                msg.set_content(f"{key}\n")
                client.send_message(msg, "app@example.com", ["oncall@example.com"])
                ack(key)  # send_message raises unless the server answered 250
        return True

    return submit


EMAIL_ROUTES = """\
  - name: all
    match: {}
    healthy: [email]
    outage: [hook]
"""


class World:
    """A daemon (SQLite or PostgreSQL store), the stand-ins, and what they received."""

    def __init__(self, daemon: DaemonProcess, smtp: SmtpServer, hook: WebhookReceiver, ports: dict[str, int]):
        self.daemon, self.smtp, self.hook, self.ports = daemon, smtp, hook, ports

    def hook_keys(self, field: Callable[[dict[str, Any]], str]) -> dict[str, set[str]]:
        """Each delivered key and the webhook-ids it arrived under."""
        found: dict[str, set[str]] = defaultdict(set)
        for request in self.hook.requests:
            found[field(request.json())].add(request.headers["webhook-id"])
        return found

    def mail_keys(self) -> dict[str, set[str]]:
        """Each relayed subject and the Message-IDs it arrived under."""
        found: dict[str, set[str]] = defaultdict(set)
        for mail in self.smtp.messages:
            parsed = email.message_from_bytes(mail.data, policy=email.policy.SMTP)
            found[str(parsed["Subject"])].add(str(parsed["Message-ID"]))
        return found


StartWorld = Callable[[str], World]


@pytest.fixture(params=["sqlite", "postgres"])
def start_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartWorld]:
    """Starts a daemon with these routes, the intake workers and the SMTP smart host."""
    ports = {"workers": free_port(), "smtp": free_port()}
    extra = (
        f"intake:\n  workers: {{listen: '127.0.0.1:{ports['workers']}', count: 2}}\n"
        f"  smtp: {{listen: '127.0.0.1:{ports['smtp']}', allowed_networks: [127.0.0.0/8],"
        " recipient_domains: [example.com]}\n"
    )
    with ExitStack() as stack:
        smtp = stack.enter_context(SmtpServer())
        hook = stack.enter_context(WebhookReceiver())

        def start(routes: str) -> World:
            settings: dict[str, Any] = dict(
                smtp_port=smtp.port, hook_url=hook.url, routes=routes, extra=extra
            )
            daemon: DaemonProcess
            if request.param == "sqlite":
                daemon = DaemonProcess(tmp_path, **settings)
            else:
                url = request.getfixturevalue("postgres_url")
                daemon = HaNode(tmp_path / "pg", url, f"k9-{uuid.uuid4().hex[:6]}", **settings)
            stack.callback(daemon.close)
            daemon.start()
            return World(daemon, smtp, hook, ports)

        yield start


def _kill_mid_burst(daemon: DaemonProcess, burst: Burst, keys: list[str], ready: Callable[[], bool]) -> None:
    until(ready, 30, "intake serving")
    for kill in range(KILLS):
        remaining = [k for k in keys if k not in burst.acked]
        thread = threading.Thread(target=burst.run, args=(remaining,))
        thread.start()
        target = len(burst.acked) + (kill + 1) * BATCH * 2

        def enough(t: int = target, th: threading.Thread = thread) -> bool:
            return len(burst.acked) >= t or not th.is_alive()

        until(enough, 30, "acks")
        daemon.kill()
        thread.join()
        daemon.start()
        until(ready, 30, "intake serving again")
    burst.run([k for k in keys if k not in burst.acked])
    assert burst.acked == set(keys)


def _smtp_serving(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
                return client.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    return check


def _http_serving(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    return check


def _check(delivered: dict[str, set[str]], acked: set[str], keys: list[str]) -> None:
    assert set(delivered) <= set(keys), "delivered something never submitted"
    assert acked <= set(delivered), f"acknowledged, never delivered: {sorted(acked - set(delivered))}"
    renamed = {k: v for k, v in delivered.items() if len(v) > 1}
    assert not renamed, f"repeats under a new idempotency key: {renamed}"


def _subject(body: dict[str, Any]) -> str:
    subject: str = body["subject"]
    return subject


def _alertname(body: dict[str, Any]) -> str:
    name: str = body["labels"]["alertname"]
    return name


@pytest.mark.parametrize("start_world", ["sqlite"], indirect=True)  # the workers share its write lock
def test_kill9_mid_burst_on_the_workers_port(start_world: StartWorld) -> None:
    """Batches a worker acknowledged before its daemon's kill -9 are all delivered, one webhook-id each."""
    world = start_world(WEBHOOK_ONLY_ROUTES)
    port = world.ports["workers"]
    keys = [f"w-{i:04d}" for i in range(TOTAL)]
    burst = Burst(_post(f"http://127.0.0.1:{port}/v1/notifications", _notifications))
    _kill_mid_burst(world.daemon, burst, keys, _http_serving(f"http://127.0.0.1:{port}/healthz"))
    until(lambda: set(world.hook_keys(_subject)) >= burst.acked, 60, "every acknowledged delivery")
    _check(world.hook_keys(_subject), burst.acked, keys)


@pytest.mark.parametrize("start_world", ["postgres"], indirect=True)  # SQLite's is test_kill9.py
def test_kill9_mid_burst_on_the_api_port(start_world: StartWorld) -> None:
    """Batches the API port acknowledged before a kill -9 are all delivered, one webhook-id each."""
    world = start_world(WEBHOOK_ONLY_ROUTES)
    keys = [f"a-{i:04d}" for i in range(TOTAL)]
    base = f"http://127.0.0.1:{world.daemon.api_port}"
    burst = Burst(_post(f"{base}/v1/notifications", _notifications))
    _kill_mid_burst(world.daemon, burst, keys, _http_serving(f"{base}/healthz"))
    until(lambda: set(world.hook_keys(_subject)) >= burst.acked, 60, "every acknowledged delivery")
    _check(world.hook_keys(_subject), burst.acked, keys)


@pytest.mark.parametrize("start_world", ["postgres"], indirect=True)
def test_kill9_mid_burst_of_alertmanager_batches(start_world: StartWorld) -> None:
    """Every alert of a call answered 202 is delivered after a kill -9, one webhook-id each."""
    world = start_world(WEBHOOK_ONLY_ROUTES)
    keys = [f"am-{i:04d}" for i in range(TOTAL)]
    base = f"http://127.0.0.1:{world.daemon.api_port}"
    burst = Burst(_post(f"{base}/v1/intake/alertmanager", _alertmanager))
    _kill_mid_burst(world.daemon, burst, keys, _http_serving(f"{base}/healthz"))
    until(lambda: set(world.hook_keys(_alertname)) >= burst.acked, 60, "every acknowledged delivery")
    _check(world.hook_keys(_alertname), burst.acked, keys)


@pytest.mark.parametrize("start_world", ["sqlite"], indirect=True)
def test_kill9_mid_burst_of_smtp_clients(start_world: StartWorld) -> None:
    """Every message a client saw 250 for is relayed after a kill -9, under its own Message-ID."""
    world = start_world(EMAIL_ROUTES)
    port = world.ports["smtp"]
    keys = [f"m-{i:04d}" for i in range(TOTAL)]
    burst = Burst(_mail(port))
    _kill_mid_burst(world.daemon, burst, keys, _smtp_serving(port))
    until(lambda: set(world.mail_keys()) >= burst.acked, 60, "every acknowledged message relayed")
    _check(world.mail_keys(), burst.acked, keys)
