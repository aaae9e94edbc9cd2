"""kill -9 after a policy reload, before its re-plan is done: the restart re-plans the backlog.

A trigger the test puts on the store refuses the re-plan's write (each try fails, as a store
refusing writes would), so the kill lands after the reload took effect and before its re-plan
finished, however fast the machine; the trigger is dropped before the restart. Another refuses to
store the owed re-plan itself: the kill then lands before anything says a re-plan is owed, and the
restart finds it by the routes the backlog was planned by, as it does after the file was edited
while the daemon was stopped. On SQLite and on PostgreSQL (where a node's owed re-plan is stored in
the shared database).
"""

from __future__ import annotations

import signal
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.acceptance.harness import DaemonProcess, until
from tests.acceptance.test_ha import HaNode
from tests.acceptance.test_operations import HOLD_THE_REST, SEND_THE_REST
from tests.integration.conftest import admin, postgres_server, postgres_url
from tests.servers import SmtpServer, WebhookReceiver

__all__ = ["postgres_server", "postgres_url"]  # fixtures, used by name

REFUSAL = "re-plan refused by the test"
SQLITE_REFUSE = f"""
CREATE TRIGGER refuse_replans BEFORE UPDATE OF plan ON notifications
BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END;
"""
POSTGRES_REFUSE = f"""
CREATE FUNCTION refuse_replans() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$;
CREATE TRIGGER refuse_replans BEFORE UPDATE OF plan ON notifications
FOR EACH ROW EXECUTE FUNCTION refuse_replans();
"""
SQLITE_ALLOW = "DROP TRIGGER refuse_replans;"
POSTGRES_ALLOW = "DROP TRIGGER refuse_replans ON notifications;"
UNSTORED = "owe refused by the test"
SQLITE_REFUSE_OWES = f"""
CREATE TRIGGER refuse_owes BEFORE INSERT ON owed_replans
BEGIN SELECT RAISE(ABORT, '{UNSTORED}'); END;
"""
POSTGRES_REFUSE_OWES = f"""
CREATE FUNCTION refuse_owes() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION '{UNSTORED}'; END $$;
CREATE TRIGGER refuse_owes BEFORE INSERT ON owed_replans
FOR EACH ROW EXECUTE FUNCTION refuse_owes();
"""
SQLITE_ALLOW_OWES = "DROP TRIGGER refuse_owes;"
POSTGRES_ALLOW_OWES = "DROP TRIGGER refuse_owes ON owed_replans;"


@dataclass(frozen=True)
class Trigger:
    """Puts on the daemon's store, from outside it, and takes off the trigger refusing re-plans."""

    run: Callable[[str], None]
    refuse: str
    allow: str
    refuse_owes: str
    allow_owes: str


@pytest.fixture(params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[DaemonProcess, WebhookReceiver, Trigger]]:
    """A started daemon holding warnings during an outage, its webhook's receiver, the trigger."""
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        ports = {"smtp_port": smtp.port, "hook_url": hook.url, "routes": HOLD_THE_REST}
        if request.param == "sqlite":
            daemon = DaemonProcess(tmp_path, **ports)
            trigger = Trigger(
                _sqlite(tmp_path / "outbox.db"),
                SQLITE_REFUSE,
                SQLITE_ALLOW,
                SQLITE_REFUSE_OWES,
                SQLITE_ALLOW_OWES,
            )
        else:
            url: str = request.getfixturevalue("postgres_url")
            daemon = HaNode(tmp_path / "node", url, f"replan-{uuid.uuid4().hex[:6]}", **ports)
            trigger = Trigger(
                _postgres(url), POSTGRES_REFUSE, POSTGRES_ALLOW, POSTGRES_REFUSE_OWES, POSTGRES_ALLOW_OWES
            )
        daemon.start()
        try:
            yield daemon, hook, trigger
        finally:
            daemon.close()


def _sqlite(path: Path) -> Callable[[str], None]:
    def run(script: str) -> None:
        conn = sqlite3.connect(path)
        try:
            conn.executescript(script)
        finally:
            conn.close()

    return run


def _postgres(url: str) -> Callable[[str], None]:
    def run(script: str) -> None:
        with admin(url) as conn:
            conn.execute(script.encode())

    return run


def _held_in_an_outage(daemon: DaemonProcess) -> str:
    """A warning the old policy holds during an outage (forced): its id, once it is held."""
    until(lambda: daemon.client.post("/v1/provider/override", json={"state": "outage"}).is_success)
    held = daemon.send("warning", "held by the old policy")
    until(lambda: daemon.notification(held)["status"] == "held", what="held")
    return held


def _reloaded_then_killed(daemon: DaemonProcess, refused: Callable[[str], bool]) -> None:
    """The file changed to send the rest and reloaded; kill -9 once the log shows ``refused``."""
    daemon.write_config(SEND_THE_REST)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    until(lambda: refused(daemon.log_path.read_text()), what="the refusal")
    daemon.kill()


def _sent_after_the_start(daemon: DaemonProcess, hook: WebhookReceiver, held: str) -> None:
    """Started again, the held warning takes the new routes' plan and is sent."""
    daemon.start()
    (request,) = hook.wait_for(1, timeout_s=10)
    assert request.json()["id"] == held
    assert daemon.notification(held)["route"] == "rest"


def test_a_reload_killed_before_its_replan_is_done_is_replanned_after_the_restart(
    stack: tuple[DaemonProcess, WebhookReceiver, Trigger],
) -> None:
    """kill -9 while a reload's re-plan cannot commit: after the restart the held warning takes
    the reloaded routes' plan and is sent, without another reload."""
    daemon, hook, trigger = stack
    held = _held_in_an_outage(daemon)
    trigger.run(trigger.refuse)
    _reloaded_then_killed(daemon, lambda log: REFUSAL in log)
    trigger.run(trigger.allow)
    _sent_after_the_start(daemon, hook, held)


def test_a_reload_killed_before_its_owed_replan_is_stored_is_replanned_after_the_restart(
    stack: tuple[DaemonProcess, WebhookReceiver, Trigger],
) -> None:
    """kill -9 after the reload took effect and before anything stored that it owes a re-plan
    (the owe refused, which the re-plan stores first): the restart compares its routes with those
    the backlog was planned by, and the held warning takes the reloaded routes' plan and is sent."""
    daemon, hook, trigger = stack
    held = _held_in_an_outage(daemon)
    trigger.run(trigger.refuse_owes)
    # refused at the reload, then again by the walk, which stores it before it moves anything
    _reloaded_then_killed(daemon, lambda log: log.count(UNSTORED) >= 2)
    trigger.run(trigger.allow_owes)
    _sent_after_the_start(daemon, hook, held)


def test_routes_edited_while_the_daemon_was_stopped_replan_the_backlog_at_the_start(
    stack: tuple[DaemonProcess, WebhookReceiver, Trigger],
) -> None:
    """Stopped cleanly, the file edited, started again (``systemctl restart`` after an edit, not
    a reload): the held warning takes the new routes' plan and is sent, as after a reload."""
    daemon, hook, _ = stack
    held = _held_in_an_outage(daemon)
    assert daemon.terminate() == 0
    daemon.write_config(SEND_THE_REST)
    _sent_after_the_start(daemon, hook, held)
    assert "routing.replan_changed_routes" in daemon.log_path.read_text()
