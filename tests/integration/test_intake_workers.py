"""Intake workers (``intake.workers``): the daemon in-process, its workers real processes, real sockets.

What a worker accepts is committed to the daemon's store, counted in the daemon's metrics and
delivered by the daemon at once (the daemon's periodic pass is set to an hour here, so only the
worker's report can have woken it); the worker refuses what the API port refuses, serves nothing
but intake, and follows configuration reloads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from daemon import cli
from daemon.api_client import TOKEN_ENV
from daemon.app import Daemon
from daemon.config import ConfigError, load_config, parse_config
from daemon.core.model import Notification, Severity
from daemon.intake.worker import Reports
from daemon.metrics import MAX_SOURCES
from daemon.store.values import Accepted
from tests.servers import SmtpServer, WebhookReceiver
from tests.stand_ins.tcp_proxy import in_front_of_postgres
from tests.support import FIRING_ALERT, config_template, until

TOKEN = "intake-workers-token-0123456789"
SLOW = "intake-workers-slow-token-2468"
NEW_TOKEN = "intake-workers-rotated-token-987654"
SECRET = "whsec_" + base64.b64encode(b"intake-workers-secret-0123456").decode()
ENV = {"TOKEN": TOKEN, "SECRET": SECRET}
CONFIG = """\
store: {{path: {store}}}
api:
  listen: "127.0.0.1:0"
  max_body_bytes: 262144
  max_alert_body_bytes: 524288
  tokens:
    - {{name: t, token: "${{TOKEN}}"}}
    - {{name: slow, token: "{slow}", scopes: [send], rate_limit: {{per_second: 0.01, burst: 4}}}}
provider:
  name: p
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
  mail_from: bc@test.example
  checks: [{{type: smtp, every: 1h, timeout: 2s}}]
channels:
  email: {{type: email, to: [ops@test.example]}}
  hook: {{type: webhook, url: "{hook_url}", secret: "${{SECRET}}", allow_private: true}}
routes:
  - {{match: {{severity: [critical]}}, healthy: [email], outage: [hook]}}
  - {{match: {{}}, healthy: [email], outage: defer}}
dispatch: {{poll: 1h}}
intake:
  workers: {{listen: "127.0.0.1:0", count: 2}}
"""
ALERT = FIRING_ALERT
AM_BODY = {
    "version": "4",
    "groupKey": "{}:{}",
    "status": "firing",
    "receiver": "backchannel",
    "groupLabels": {},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://am.example",
    "alerts": [ALERT],
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Daemon, WebhookReceiver, Path]]:
    async with _world(tmp_path, str(tmp_path / "outbox.db")) as running:
        yield running


@pytest.fixture
async def pg_world(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[Daemon, WebhookReceiver, Path]]:
    """The same daemon and workers on a PostgreSQL store (a fresh schema)."""
    async with _world(tmp_path, postgres_url, key="url") as running:
        yield running


@contextlib.asynccontextmanager
async def _world(
    tmp_path: Path, store: str, key: str = "path", edit: Callable[[str], str] = str
) -> AsyncIterator[tuple[Daemon, WebhookReceiver, Path]]:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        path = tmp_path / "backchannel.yaml"
        text = CONFIG.format(store=f'"{store}"', smtp_port=smtp.port, hook_url=hook.url, slow=SLOW)
        path.write_text(edit(text.replace("store: {path:", f"store: {{{key}:", 1)))
        os.environ.update(ENV)
        daemon = Daemon(load_config(path), config_path=path)
        await daemon.start()
        try:
            yield daemon, hook, path
        finally:
            await daemon.stop()
            for name in ENV:
                os.environ.pop(name, None)


def _intake(daemon: Daemon, token: str = TOKEN) -> httpx.AsyncClient:
    assert daemon.workers is not None
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{daemon.workers.port}", headers={"Authorization": f"Bearer {token}"}
    )


def _api(daemon: Daemon, token: str = TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{daemon.api_port}", headers={"Authorization": f"Bearer {token}"}
    )


async def test_what_a_worker_accepts_is_committed_counted_and_delivered_at_once(
    world: tuple[Daemon, WebhookReceiver, Path],
) -> None:
    await _accepted_counted_delivered(*world[:2])


async def test_workers_on_a_postgresql_store(pg_world: tuple[Daemon, WebhookReceiver, Path]) -> None:
    await _accepted_counted_delivered(*pg_world[:2])


async def _accepted_counted_delivered(daemon: Daemon, hook: WebhookReceiver) -> None:
    async with _intake(daemon) as intake, _api(daemon) as api:
        assert (await api.post("/v1/provider/override", json={"state": "outage"})).status_code == 200
        sent = await intake.post("/v1/notifications", json={"severity": "critical", "subject": "db down"})
        assert sent.status_code == 202, sent.text
        alert = await intake.post("/v1/intake/alertmanager", json=AM_BODY)
        assert alert.status_code == 202, alert.text
        again = await intake.post("/v1/intake/alertmanager", json=AM_BODY)
        assert again.json()["duplicates"] == alert.json()["ids"]
        # dispatch.poll is an hour: only the workers' reports can have woken the dispatcher
        requests = await hook.wait_for_async(2, timeout_s=20)
        subjects = sorted(r.json()["subject"] for r in requests)
        assert subjects == ["[FIRING] DiskFull: disk full on db-1", "db down"]

        async def recorded() -> bool:  # the outcome is committed after the webhook has answered
            trail = (await api.get(f"/v1/notifications/{sent.json()['id']}")).json()
            return trail["status"] == "delivered"

        await until(recorded)

        async def counted() -> bool:
            text = (await api.get("/metrics")).text
            return (
                'backchannel_notifications_accepted_total{severity="critical",source="api"} 1.0' in text
                and 'backchannel_notifications_accepted_total{severity="critical",source="alertmanager"} 1.0'
                in text
                and "backchannel_notifications_duplicate_total 1.0" in text
                and "backchannel_intake_workers 2.0" in text
            )

        await until(counted)


async def test_healthz_on_both_ports_is_503_while_postgresql_is_down_and_200_once_it_is_back(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL unreachable (its connections reset, new ones refused): the daemon's /healthz
    says so from its dispatcher's failing passes, a worker's from its own failed accept, both 503
    store_unavailable as every intake answers; /metrics, /v1/status (and the status command) and
    the status page still answer, with the store down and without what only the store knows; once
    the server is back both are ready again with nothing accepted meanwhile (the worker's probe
    commits), and the worker accepts."""
    proxy, url = await in_front_of_postgres(postgres_url)

    def edit(text: str) -> str:
        text = text.replace(f'"{url}"}}', f'"{url}", connect_timeout: 1s}}', 1)
        return text.replace("poll: 1h", "poll: 200ms").replace("count: 2", "count: 1")

    try:
        async with (
            _world(tmp_path, url, key="url", edit=edit) as (daemon, _, _),
            _intake(daemon) as intake,
            _api(daemon) as api,
        ):
            assert (await api.get("/healthz")).status_code == 200
            assert (await intake.get("/healthz")).status_code == 200
            await proxy.down()
            refused = await intake.post("/v1/notifications", json={"severity": "critical", "subject": "x"})
            assert (refused.status_code, refused.json()["error"]) == (503, "store_unavailable")
            for client in (intake, api):
                health = await until(lambda c=client: _unready(c), deadline_s=15)
                assert health.json()["error"] == "store_unavailable", health.text
                assert health.headers["Retry-After"] == "5"
            head = await intake.head("/healthz")
            assert (head.status_code, head.content) == (503, b"")
            assert "store unavailable since" in await daemon._status_line()
            scrape = await api.get("/metrics")
            assert scrape.status_code == 200, scrape.text
            assert "backchannel_store_up 0.0" in scrape.text
            assert "backchannel_provider_state{" in scrape.text
            assert "backchannel_queue_notifications" not in scrape.text
            status = await api.get("/v1/status")
            assert status.status_code == 200, status.text
            document = status.json()
            assert document["store"]["state"] == "unavailable"
            assert (document["provider"]["state"], document["provider"]["events"]) == ("healthy", [])
            assert (document["queue"], document["channels"], document["nodes"]) == (None, None, None)
            monkeypatch.setenv(TOKEN_ENV, TOKEN)
            printed = await asyncio.to_thread(_status_command, daemon)
            assert "store: UNAVAILABLE" in printed and "queue: unknown" in printed, printed
            page = await api.get("/")
            assert page.status_code == 200, page.text
            assert "HEALTHY" in page.text and "the store cannot be read" in page.text
            await proxy.start()
            for client in (intake, api):
                await until(lambda c=client: _ready(c), deadline_s=15)
            scrape = await api.get("/metrics")
            assert "backchannel_store_up 1.0" in scrape.text
            assert (await api.get("/v1/status")).json()["queue"] is not None
            assert 'backchannel_queue_notifications{status="pending"}' in scrape.text
            sent = await intake.post("/v1/notifications", json={"severity": "critical", "subject": "y"})
            assert sent.status_code == 202, sent.text
    finally:
        await proxy.down()


def _status_command(daemon: Daemon) -> str:
    """What ``backchannel status`` prints against the daemon's API (its token in the environment)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["status", "--url", f"http://127.0.0.1:{daemon.api_port}"]) == 0
    return printed.getvalue()


async def _unready(client: httpx.AsyncClient) -> httpx.Response | None:
    response = await client.get("/healthz")
    return response if response.status_code == 503 else None


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/healthz")).status_code == 200


async def test_a_worker_refuses_what_the_api_refuses_and_serves_only_intake(
    world: tuple[Daemon, WebhookReceiver, Path],
) -> None:
    daemon, _, _ = world
    body = {"severity": "critical", "subject": "x"}
    async with _intake(daemon, token="wrong") as wrong, _intake(daemon) as intake, _api(daemon) as api:
        assert (await wrong.post("/v1/notifications", json=body)).status_code == 401
        assert (await wrong.post("/v1/intake/alertmanager", json=AM_BODY)).status_code == 401
        anonymous = await intake.post("/v1/notifications", json=body, headers={"Authorization": ""})
        assert anonymous.status_code == 401
        basic = base64.b64encode(f"t:{TOKEN}".encode()).decode()
        as_basic = await intake.post(
            "/v1/intake/alertmanager", json=AM_BODY, headers={"Authorization": f"Basic {basic}"}
        )
        assert as_basic.status_code == 202, as_basic.text
        invalid = await intake.post("/v1/notifications", json={"severity": "urgent", "subject": "x"})
        assert invalid.status_code == 422 and "severity" in invalid.json()["message"]
        keyed = {"Idempotency-Key": "worker-key"}
        first = await intake.post("/v1/notifications", json=body, headers=keyed)
        reused = await intake.post("/v1/notifications", json={**body, "subject": "y"}, headers=keyed)
        assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"
        on_api = await api.post("/v1/notifications", json={**body, "subject": "y"}, headers=keyed)
        assert on_api.status_code == 422 and on_api.json() == reused.json()
        assert first.status_code == 202
        too_large = await intake.post("/v1/notifications", content=b"x" * 300_000)
        assert too_large.status_code == 413 and too_large.json()["error"] == "too_large"
        alerts = [{**ALERT, "fingerprint": f"{n:08x}", "x": "y" * 900} for n in range(300)]
        group = {**AM_BODY, "alerts": alerts}
        assert (await intake.post("/v1/intake/alertmanager", json=group)).status_code == 202  # past 256 KiB
        larger = await intake.post("/v1/intake/alertmanager", content=b"x" * 600_000)
        assert larger.status_code == 413 and "524288" in larger.json()["message"]
        anonymous = await intake.post(  # nothing past the default is buffered before credentials
            "/v1/intake/alertmanager", json=group, headers={"Authorization": "Bearer wrong"}
        )
        assert anonymous.status_code == 413 and "262144" in anonymous.json()["message"]
        status = await intake.get("/v1/status")
        assert status.status_code == 404 and "API port" in status.json()["message"]
        slash = await intake.post("/v1/notifications/", json=body)
        assert slash.status_code == 404 and "no trailing slash" in slash.json()["message"]
        not_allowed = await intake.get("/v1/notifications")
        assert (not_allowed.status_code, not_allowed.headers["allow"]) == (405, "POST")
        assert (await intake.post("/healthz")).headers["allow"] == "GET, HEAD"
        health = await intake.get("/healthz")
        assert health.status_code == 200 and health.json()["role"] == "intake"
        head = await intake.head("/healthz")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == health.headers["content-length"]
        not_here = await intake.head("/v1/notifications")  # 405, and no body after a HEAD either
        assert (not_here.status_code, not_here.content) == (405, b"")


async def test_a_tokens_rate_limit_is_one_bucket_for_the_daemon_and_its_workers(
    world: tuple[Daemon, WebhookReceiver, Path],
) -> None:
    """Burst 4, then one per 100 s: two requests on the API port and two on the workers' (a new
    connection each, so both workers may take some) spend it; then every port answers 429 (503 on
    the alert webhooks)."""
    daemon, _, _ = world
    body = {"severity": "info", "subject": "limited"}

    async def post(client: Callable[[Daemon, str], httpx.AsyncClient]) -> httpx.Response:
        async with client(daemon, SLOW) as fresh:
            return await fresh.post("/v1/notifications", json=body)

    spent = [await post(_api), await post(_intake), await post(_api), await post(_intake)]
    assert [r.status_code for r in spent] == [202] * 4, [r.text for r in spent]
    over = [await post(_intake) for _ in range(3)] + [await post(_api)]
    assert [r.status_code for r in over] == [429] * 4
    assert all(int(r.headers["Retry-After"]) >= 90 for r in over)
    hooks = []
    for client in (_intake, _api):  # a 503, which Alertmanager retries (it drops a 4xx'd call)
        async with client(daemon, SLOW) as fresh:
            hooks.append(await fresh.post("/v1/intake/alertmanager", json=AM_BODY))
    assert [(r.status_code, r.json()["error"]) for r in hooks] == [(503, "rate_limited")] * 2
    assert all(int(r.headers["Retry-After"]) >= 90 for r in hooks)
    async with _api(daemon) as api:  # the daemon counts the workers' refusals too
        metrics = (await api.get("/metrics")).text
    assert 'backchannel_api_rate_limited_total{token="slow"} 6.0' in metrics


async def test_a_reload_reaches_the_workers(world: tuple[Daemon, WebhookReceiver, Path]) -> None:
    daemon, _, path = world
    body = {"severity": "info", "subject": "rotated"}
    path.write_text(path.read_text().replace('token: "${TOKEN}"', f'token: "{NEW_TOKEN}"'))
    daemon.reload()
    async with _intake(daemon, token=NEW_TOKEN) as rotated, _intake(daemon) as old:

        async def every_worker_has_it() -> bool:
            # each request may land on either worker: several in a row must all pass
            answers = [await rotated.post("/v1/notifications", json=body) for _ in range(6)]
            return all(a.status_code == 202 for a in answers)

        await until(every_worker_has_it)
        assert (await old.post("/v1/notifications", json=body)).status_code == 401


async def test_a_broken_reload_keeps_the_workers_configuration(
    world: tuple[Daemon, WebhookReceiver, Path],
) -> None:
    daemon, _, path = world
    path.write_text(path.read_text().replace("routes:", "routes: [oops"))
    daemon.reload()
    async with _intake(daemon) as intake:
        answer = await intake.post("/v1/notifications", json={"severity": "info", "subject": "still"})
        assert answer.status_code == 202


def test_the_workers_listener_must_differ_from_the_api(tmp_path: Path) -> None:
    text = config_template("routes: [{{match: {{}}, healthy: [email], outage: defer}}]\n").format(
        store=tmp_path / "o.db", api_port=8025, smtp_port=25
    )
    with pytest.raises(ConfigError, match=r"intake\.workers\.listen: must differ"):
        parse_config(text + 'intake: {workers: {listen: "127.0.0.1:8025"}}\n', env={"TOKEN": TOKEN})
    with pytest.raises(ConfigError, match=r"intake\.workers\.count"):
        parse_config(text + "intake: {workers: {count: 0}}\n", env={"TOKEN": TOKEN})


async def test_workers_need_the_configuration_text(tmp_path: Path) -> None:
    text = config_template("routes: [{{match: {{}}, healthy: [email], outage: defer}}]\n").format(
        store=tmp_path / "o.db", api_port=0, smtp_port=25
    )
    built = parse_config(text + 'intake: {workers: {listen: "127.0.0.1:0"}}\n', env={"TOKEN": TOKEN})
    in_code = type(built).model_validate(built.model_dump(by_alias=True))
    daemon = Daemon(in_code)
    with pytest.raises(RuntimeError, match=r"intake\.workers needs the configuration"):
        await daemon.start()
    await daemon.stop()


#: one critical notification from the API, committed (not a duplicate): what a report counts
_ONE_CRITICAL = (
    [Notification("n1", "n1", datetime.now(UTC), Severity.CRITICAL, "s")],
    [Accepted(id="n1", duplicate=False)],
)


async def test_reports_never_block_the_worker_and_lose_no_count() -> None:
    read_fd, write_fd = os.pipe()
    reports = Reports(write_fd)
    # fill the pipe while nobody reads: writes must not block, the counts must wait
    for _ in range(5000):
        reports.accepted(*_ONE_CRITICAL)
        await asyncio.sleep(0)
    total = 0
    buffered = b""
    os.set_blocking(read_fd, False)

    async def all_counted() -> bool:
        nonlocal total, buffered
        with contextlib.suppress(BlockingIOError):
            buffered += os.read(read_fd, 1 << 20)
        *lines, buffered = buffered.split(b"\n")
        total += sum(n for line in lines for _, _, n in json.loads(line)["accepted"])
        reports.accepted([], [])  # the next commit carries what waited
        await asyncio.sleep(0)
        return total == 5000

    await until(all_counted)
    os.close(read_fd)
    os.close(write_fd)


async def test_the_first_commit_of_a_turn_is_reported_before_its_callers_are_answered() -> None:
    read_fd, write_fd = os.pipe()
    try:
        reports = Reports(write_fd)
        os.set_blocking(read_fd, False)
        reports.accepted(*_ONE_CRITICAL)
        # written at once: the daemon starts delivering while the worker writes its replies
        line = json.loads(os.read(read_fd, 1 << 16))
        assert line == {"accepted": [["critical", "api", 1]], "duplicates": 0}
        for _ in range(3):  # the rest of the turn: one line at its end
            reports.accepted(*_ONE_CRITICAL)
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 1 << 16)
        await asyncio.sleep(0)
        line = json.loads(os.read(read_fd, 1 << 16))
        assert line == {"accepted": [["critical", "api", 3]], "duplicates": 0}
        await asyncio.sleep(0)
        with pytest.raises(BlockingIOError):  # nothing more committed: no empty line
            os.read(read_fd, 1 << 16)
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_a_report_longer_than_64_kib_is_counted_whole(
    world: tuple[Daemon, WebhookReceiver, Path],
) -> None:
    daemon, _, _ = world
    # one commit, 500 distinct sources chosen by the client: one report line of about 80 KiB
    batch = [{"severity": "info", "subject": "s", "source": f"src-{i:03d}-" + "x" * 120} for i in range(500)]
    async with _intake(daemon) as intake, _api(daemon) as api:
        answer = await intake.post("/v1/notifications", json=batch)
        assert answer.status_code == 202, answer.text
        after = await intake.post(
            "/v1/notifications", json={"severity": "info", "subject": "a", "source": "after"}
        )
        assert after.status_code == 202

        async def counted() -> bool:
            # the first 100 sources get series of their own, the rest (and "after") count as other
            lines = (await api.get("/metrics")).text.splitlines()
            series = [line for line in lines if line.startswith("backchannel_notifications_accepted_total{")]
            by_source = sum(1 for line in series if 'source="src-' in line and line.endswith(" 1.0"))
            other = [line.rsplit(" ", 1)[1] for line in series if 'source="other"' in line]
            return by_source == MAX_SOURCES and other == [f"{501 - MAX_SOURCES}.0"]

        await until(counted)
        assert "backchannel_intake_workers 2.0" in (await api.get("/metrics")).text


async def test_a_report_past_the_limit_leaves_one_process_per_worker_still_reporting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report line over the limit is dropped; the worker keeps reporting and is not doubled."""
    monkeypatch.setattr("daemon.intake.workers.REPORT_LIMIT", 4096)
    wide = [{"severity": "info", "subject": "s", "source": f"{n:03d}" + "x" * 100} for n in range(60)]
    async with _world(tmp_path, str(tmp_path / "outbox.db")) as (daemon, _, _):
        before = _worker_processes()
        async with _intake(daemon) as intake, _api(daemon) as api:  # one connection: one worker
            assert (await intake.post("/v1/notifications", json=wide)).status_code == 202
            sent = await intake.post("/v1/notifications", json={"severity": "high", "subject": "after"})
            assert sent.status_code == 202

            async def counted() -> bool:  # dispatch.poll is an hour: only a report counts it
                text = (await api.get("/metrics")).text
                return 'backchannel_notifications_accepted_total{severity="high",source="api"} 1.0' in text

            await until(counted)
        assert _worker_processes() == before


def _worker_processes() -> list[int]:
    """This process's children running an intake worker."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, NotADirectoryError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"daemon.intake.worker" in cmdline:
            found.append(int(entry.name))
    return sorted(found)
