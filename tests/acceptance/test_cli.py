"""The ``backchannel`` command line, run as a subprocess."""

from __future__ import annotations

import functools
import http.server
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.harness import TOKEN, WEBHOOK_SECRET, DaemonProcess, free_port
from tests.servers import SmtpServer, WebhookReceiver

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, BC_TOKEN=TOKEN, BC_WEBHOOK_SECRET=WEBHOOK_SECRET)


def cli(*args: str, env: dict[str, str] = ENV, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[DaemonProcess, SmtpServer]]:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon = DaemonProcess(tmp_path, smtp_port=smtp.port, hook_url=hook.url)
        daemon.start()
        try:
            yield daemon, smtp
        finally:
            daemon.close()


def test_check_summarises_a_valid_file(running: tuple[DaemonProcess, SmtpServer]) -> None:
    """check prints the routes and channels of a valid file and exits 0."""
    daemon, _ = running
    result = cli("check", "-c", str(daemon.config_path))
    assert result.returncode == 0, result.stderr
    assert "route critical: healthy -> email; outage -> hook" in result.stdout
    assert "route rest: healthy -> email; outage -> defer" in result.stdout


def test_check_reports_every_problem_and_exits_78(tmp_path: Path) -> None:
    """A bad file exits 78 with every problem on its own line, naming file, line and field."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "store: {path: /tmp/x.db}\n"
        "api: {listen: 127.0.0.1:8025, tokens: [{name: a, token: t}]}\n"
        "provider:\n"
        "  name: p\n"
        "  smtp: {host: h, port: seventy}\n"
        "channels: {email: {type: email}}\n"
        "routes:\n"
        "  - {match: {}, healthy: [mail], outage: defer}\n"
    )
    result = cli("check", "-c", str(path))
    assert result.returncode == 78
    assert f"{path}:5: provider.smtp.port" in result.stderr
    assert f"{path}:8: routes[0].healthy[0]" in result.stderr


def test_migrate_applies_then_reports_up_to_date(
    running: tuple[DaemonProcess, SmtpServer], tmp_path: Path
) -> None:
    """migrate applies the schema to a new store and says so; a second run has nothing to do."""
    daemon, _ = running
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(daemon.config_path.read_text().replace("outbox.db", "fresh.db"))
    first = cli("migrate", "-c", str(fresh))
    assert first.returncode == 0, first.stderr
    shipped = sorted(int(sql.name[:4]) for sql in (REPO / "daemon/store/migrations/sqlite").glob("*.sql"))
    assert f"applied {shipped}" in first.stdout
    assert "schema up to date" in cli("migrate", "-c", str(fresh)).stdout


def test_a_store_from_a_newer_release_stops_the_daemon_with_78(
    running: tuple[DaemonProcess, SmtpServer], tmp_path: Path
) -> None:
    """No restart mends a store a newer release migrated: run exits 78 (which the unit does not
    restart) with one line saying so, not a traceback that systemd restarts every 2 s."""
    daemon, _ = running
    newer = tmp_path / "newer.yaml"
    text = daemon.config_path.read_text().replace("outbox.db", "newer.db")
    newer.write_text(text.replace(f"127.0.0.1:{daemon.api_port}", "127.0.0.1:0"))  # its port is taken
    assert cli("migrate", "-c", str(newer)).returncode == 0
    with sqlite3.connect(tmp_path / "newer.db") as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 0)")
    result = cli("run", "-c", str(newer))
    assert result.returncode == 78, result.stderr
    assert "the database schema is at version 999" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_on_a_locked_store_says_so(running: tuple[DaemonProcess, SmtpServer], tmp_path: Path) -> None:
    """A store another process holds the write lock of: one line and exit 69, not a traceback."""
    daemon, _ = running
    locked = tmp_path / "locked.yaml"
    locked.write_text(daemon.config_path.read_text().replace("outbox.db", "locked.db"))
    with sqlite3.connect(tmp_path / "locked.db", isolation_level=None) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        result = cli("migrate", "-c", str(locked))
        holder.execute("ROLLBACK")
    assert result.returncode == 69, result.stderr
    assert result.stderr.startswith("migration failed: database is locked")
    assert "Traceback" not in result.stderr


def test_schema_is_json_schema() -> None:
    """schema prints a JSON Schema with the top-level sections."""
    result = cli("schema")
    schema = json.loads(result.stdout)
    assert {"store", "api", "provider", "channels", "routes"} <= set(schema["properties"])


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """``backchannel schema | head``: the command stops quietly, exit 1, when the pipe closes."""
    cmd = [sys.executable, "-m", "daemon", "schema"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == "{"  # the rest (more than a pipe holds) is blocked
        proc.stdout.close()
        errors = proc.stderr.read()
        assert proc.wait(60) == 1
    assert "Traceback" not in errors and "BrokenPipeError" not in errors


def test_send_status_and_override(running: tuple[DaemonProcess, SmtpServer]) -> None:
    """send submits, status shows the provider, override forces an outage and releases it."""
    daemon, smtp = running
    config = str(daemon.config_path)
    sent = cli("send", "-c", config, "--severity", "high", "--subject", "from the CLI", "--label", "team=db")
    assert sent.returncode == 0, sent.stderr
    smtp.wait_for(1)
    assert daemon.notification(sent.stdout.strip())["labels"] == {"team": "db"}
    assert "provider test-provider: HEALTHY" in cli("status", "-c", config).stdout
    forced = cli("override", "-c", config, "outage", "--reason", "drill")
    assert forced.stdout.strip() == "provider state: outage"
    assert "OUTAGE (forced: drill)" in cli("status", "-c", config).stdout
    assert cli("override", "-c", config, "release").stdout.strip() == "provider state: healthy"
    status = json.loads(cli("status", "-c", config, "--json").stdout)
    # newest first; a check timing out on a loaded machine (250 ms here) may add a suspect blip after
    causes = [e["cause"] for e in status["provider"]["events"]]
    assert causes.index("operator override released") < causes.index("forced by operator: drill")


def test_status_of_an_override_says_since_when_it_is_in_force(
    running: tuple[DaemonProcess, SmtpServer],
) -> None:
    """A forced state is shown since the override, not since the checks' state it overrides."""
    daemon, _ = running
    config = str(daemon.config_path)
    assert cli("override", "-c", config, "outage", "--reason", "EX123").returncode == 0
    provider = json.loads(cli("status", "-c", config, "--json").stdout)["provider"]
    forced = next(e for e in provider["events"] if e["cause"] == "forced by operator: EX123")
    assert provider["since"] == forced["at"]
    assert f"OUTAGE (forced: EX123) since {forced['at']}" in cli("status", "-c", config).stdout
    assert cli("override", "-c", config, "release").returncode == 0
    assert json.loads(cli("status", "-c", config, "--json").stdout)["provider"]["since"] != forced["at"]


def test_client_commands_say_when_the_daemon_is_down(tmp_path: Path) -> None:
    """status against a daemon that is not running exits 69 with a clear message naming the URL."""
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon = DaemonProcess(tmp_path, smtp_port=smtp.port, hook_url=hook.url)
        result = cli("status", "-c", str(daemon.config_path))
        daemon.close()
    assert result.returncode == 69
    assert f"cannot reach the daemon at http://127.0.0.1:{daemon.api_port}: " in result.stderr


def test_client_commands_say_when_the_url_is_not_the_api(tmp_path: Path) -> None:
    """A --url answered by something else (a proxy's error page), or one that does not parse, is a
    message and a non-zero exit, not a traceback."""
    config = tmp_path / "bc.yaml"
    config.write_text("api: {listen: 127.0.0.1:8025}\n")
    env = ENV | {"BACKCHANNEL_TOKEN": TOKEN}
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{other.server_address[1]}"
            not_the_api = cli("status", "-c", str(config), "--url", url, env=env)
        finally:
            other.shutdown()
    malformed = cli("status", "-c", str(config), "--url", "http://[::1", env=env)
    assert not_the_api.returncode == 69, not_the_api.stderr
    assert f"{url} is not backchannel's API: HTTP 404" in not_the_api.stderr
    assert malformed.returncode == 64, malformed.stderr
    assert "bad API URL 'http://[::1'" in malformed.stderr
    assert "Traceback" not in not_the_api.stderr + malformed.stderr


def test_demo_shows_failover_and_recovery() -> None:
    """backchannel demo runs the whole story on local stand-ins and exits 0 within a minute."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "backchannel"), "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in (
        "delivered by EMAIL",
        "OUTAGE declared after 3 failed checks",
        "delivered by WEBHOOK (signature valid)",
        "held until the provider recovers",
        "RECOVERY confirmed",
        "held mail delivered by EMAIL",
    ):
        assert line in result.stdout


EXAMPLE = REPO / "deploy" / "examples" / "policy.yaml"
EXAMPLE_ENV = dict(
    os.environ, BACKCHANNEL_API_TOKEN="x1234567890", SMTP_PASSWORD="x", SLACK_BOT_TOKEN="xoxb-1",
    TWILIO_AUTH_TOKEN="t", WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
)  # fmt: skip


def test_routes_test_for_the_example_policy() -> None:
    """routes test names the matched route and the plan of the documented example policy."""
    result = cli("routes", "test", "-c", str(EXAMPLE), "--severity", "critical", "--label", "team=db",
                 "--state", "outage", env=EXAMPLE_ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "route db-critical" in result.stdout
    assert "plan (outage): escalate until acknowledged" in result.stdout
    assert "+5m sms (sms)" in result.stdout


def test_routes_show_draws_the_tree() -> None:
    """routes show draws nested routes under their parent."""
    result = cli("routes", "show", "-c", str(EXAMPLE), env=EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert "└─ db-critical" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("everything-else")


def test_client_commands_take_the_token_from_the_environment(
    running: tuple[DaemonProcess, SmtpServer],
) -> None:
    """BACKCHANNEL_TOKEN: the configuration's secrets are left unread (under systemd they are
    credentials only the service can read), so status works where they cannot be resolved."""
    daemon, _ = running
    without_secrets = {k: v for k, v in ENV.items() if k not in ("BC_TOKEN", "BC_WEBHOOK_SECRET")}
    unresolved = cli("status", "-c", str(daemon.config_path), env=without_secrets)
    assert unresolved.returncode == 78 and "BC_TOKEN" in unresolved.stderr
    given = cli("status", "-c", str(daemon.config_path), env=without_secrets | {"BACKCHANNEL_TOKEN": TOKEN})
    assert given.returncode == 0, given.stderr
    assert "provider test-provider: HEALTHY" in given.stdout


#: a PostgreSQL URL whose password has a '%' not written as %25: libpq's error quotes the password
_BAD_PG_PASSWORD = "Pa55%word-SECRET-71"


def _unparsable_pg_config(tmp_path: Path) -> Path:
    path = tmp_path / "pg.yaml"
    path.write_text(
        f"store: {{url: 'postgresql://bc:{_BAD_PG_PASSWORD}@127.0.0.1:1/x', connect_timeout: 1s}}\n"
        f"api: {{listen: 127.0.0.1:{free_port()}, tokens: [{{name: a, token: tok-0123456789}}]}}\n"
        "provider: {name: p, smtp: {host: 127.0.0.1, port: 1}, mail_from: bc@test.example}\n"
        "channels: {email: {type: email, to: [oncall@test.example]}}\n"
        "routes: [{match: {}, healthy: [email], outage: [email]}]\n"
    )
    return path


def test_migrate_never_prints_the_store_password(tmp_path: Path) -> None:
    """migrate on a PostgreSQL URL libpq cannot parse fails without quoting the URL's password."""
    result = cli("migrate", "-c", str(_unparsable_pg_config(tmp_path)))
    assert result.returncode == 69, result.stderr
    assert result.stderr.startswith("migration failed: ")
    assert _BAD_PG_PASSWORD not in result.stdout + result.stderr


def test_run_never_logs_the_store_password(tmp_path: Path) -> None:
    """run on a PostgreSQL URL libpq cannot parse: the pool's warnings mask the URL's password."""
    result = cli("run", "-c", str(_unparsable_pg_config(tmp_path)))
    assert result.returncode != 0
    assert "invalid percent-encoded token" in result.stderr
    assert _BAD_PG_PASSWORD not in result.stdout + result.stderr
