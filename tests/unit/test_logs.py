"""Structured log lines: the JSON shape, the terminal shape, and redaction of registered secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from daemon.logs import (
    DEFAULT_EVENT,
    JsonFormatter,
    configure_logging,
    log_event,
    register_secret,
)

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_state() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def stream(root_state: None) -> io.StringIO:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    return out


@pytest.fixture
def secret() -> str:
    value = f"sk-{secrets.token_hex(12)}"
    register_secret(value)
    return value


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_stable_keys_then_fields(stream: io.StringIO) -> None:
    """A log_event line is one JSON object: ts, level, event, logger, msg, then its own fields."""
    log_event(
        logging.getLogger("backchannel.dispatch"),
        "delivery.sent",
        "sent",
        notification_id="n1",
        channel="slack",
    )
    (line,) = _lines(stream)
    assert list(line) == ["ts", "level", "event", "logger", "msg", "notification_id", "channel"]
    assert TS.match(line["ts"])
    assert line | {"ts": None} == {
        "ts": None,
        "level": "INFO",
        "event": "delivery.sent",
        "logger": "backchannel.dispatch",
        "msg": "sent",
        "notification_id": "n1",
        "channel": "slack",
    }


def test_plain_logging_call_with_extra_is_structured(stream: io.StringIO) -> None:
    """``extra={"event": ...}`` on an ordinary logger call yields the same shape."""
    logging.getLogger("app").warning("mode %s", "outage", extra={"event": "routing.mode", "mode": "outage"})
    (line,) = _lines(stream)
    assert (line["event"], line["msg"], line["mode"], line["level"]) == (
        "routing.mode",
        "mode outage",
        "outage",
        "WARNING",
    )


def test_line_without_event_gets_the_default_event(stream: io.StringIO) -> None:
    """A third-party line without an event name still parses, under the default event."""
    logging.getLogger("some.third_party.library").info("started")
    assert _lines(stream)[0]["event"] == DEFAULT_EVENT


def test_fields_that_shadow_logrecord_attributes_are_kept(stream: io.StringIO) -> None:
    """Fields named like LogRecord attributes (name, args) are logged, not rejected."""
    log_event(logging.getLogger("x"), "channel.built", name="pager", args="a")
    line = _lines(stream)[0]
    assert (line["name"], line["args"], line["logger"]) == ("pager", "a", "x")


def test_non_json_field_values_are_stringified(stream: io.StringIO) -> None:
    """A field that JSON cannot encode is logged as its str()."""
    log_event(logging.getLogger("x"), "store.opened", path=object.__new__(_Path))
    assert _lines(stream)[0]["path"] == "/var/lib/backchannel/db"


class _Path:
    def __str__(self) -> str:
        return "/var/lib/backchannel/db"


def test_level_filters_lines(root_state: None) -> None:
    """configure_logging(level=WARNING) drops INFO lines."""
    out = io.StringIO()
    configure_logging(json=True, level="warning", stream=out)
    log_event(logging.getLogger("x"), "a.info")
    log_event(logging.getLogger("x"), "a.warn", level=logging.WARNING)
    assert [line["event"] for line in _lines(out)] == ["a.warn"]


def test_configure_twice_keeps_one_handler(root_state: None) -> None:
    """Reconfiguring replaces the handler instead of doubling every line."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    configure_logging(json=True, stream=second)
    log_event(logging.getLogger("x"), "once")
    assert (first.getvalue(), len(_lines(second))) == ("", 1)


def test_secret_is_redacted_in_msg(stream: io.StringIO, secret: str) -> None:
    """A registered secret in the formatted message becomes ***."""
    logging.getLogger("x").info("token is %s", secret)
    assert secret not in stream.getvalue()
    assert _lines(stream)[0]["msg"] == "token is ***"


def test_secret_is_redacted_in_fields(stream: io.StringIO, secret: str) -> None:
    """Secrets inside field values, nested ones and keys included, become ***."""
    log_event(logging.getLogger("x"), "slack.call", url=f"https://h/{secret}/x", headers={"auth": [secret]})
    line = _lines(stream)[0]
    assert secret not in stream.getvalue()
    assert (line["url"], line["headers"]) == ("https://h/***/x", {"auth": ["***"]})


def test_secret_is_redacted_in_traceback(stream: io.StringIO, secret: str) -> None:
    """An exception whose text holds a secret is logged with the secret redacted."""
    try:
        raise ValueError(f"401 for token {secret}")
    except ValueError:
        logging.getLogger("x").exception("send failed", extra={"event": "delivery.failed"})
    line = _lines(stream)[0]
    assert secret not in stream.getvalue()
    assert line["exception"].startswith("Traceback") and "401 for token ***" in line["exception"]


def test_secret_with_json_special_characters_is_redacted(stream: io.StringIO) -> None:
    """A secret containing quotes and backslashes is redacted before JSON escaping hides it."""
    value = f'p"a\\ss{secrets.token_hex(4)}'
    register_secret(value)
    logging.getLogger("x").info("password %s", value)
    assert _lines(stream)[0]["msg"] == "password ***"


def test_secret_in_a_key_or_a_tuple_is_redacted(stream: io.StringIO, secret: str) -> None:
    """Keys and tuple items are searched like any other string of the line."""
    log_event(logging.getLogger("x"), "call", seen={secret: (1, f"a{secret}b")})
    assert secret not in stream.getvalue()
    assert _lines(stream)[0]["seen"] == {"***": [1, "a***b"]}


def test_values_json_cannot_take_as_they_are_are_converted(stream: io.StringIO) -> None:
    """A set becomes a list and a key that is not a string its str(), as always."""
    log_event(logging.getLogger("x"), "ids", ids={1: "one"}, tags=frozenset({"a"}))
    line = _lines(stream)[0]
    assert (line["ids"], line["tags"]) == ({"1": "one"}, ["a"])


def test_timestamps_to_the_millisecond_across_seconds() -> None:
    """The part up to the second is kept from one line to the next until the second changes."""
    formatter = JsonFormatter()
    created = (1_700_000_000.5, 1_700_000_000.987, 1_700_000_001.004, 1_700_000_001.9999996)
    stamps = [json.loads(formatter.format(logging.makeLogRecord({"created": c})))["ts"] for c in created]
    assert stamps == [
        "2023-11-14T22:13:20.500Z",
        "2023-11-14T22:13:20.987Z",
        "2023-11-14T22:13:21.004Z",
        "2023-11-14T22:13:22.000Z",  # rounded to the microsecond as datetime does: the next second
    ]


def test_longer_secret_wins_over_its_prefix(stream: io.StringIO) -> None:
    """When one secret contains another, the longer is redacted whole, leaking no suffix."""
    short = secrets.token_hex(6)
    register_secret(short)
    register_secret(short + "TAIL")
    logging.getLogger("x").info("%sTAIL", short)
    assert _lines(stream)[0]["msg"] == "***"


def test_human_mode_on_a_tty(root_state: None, secret: str) -> None:
    """On a terminal the line reads ``ts level event msg key=value``, redacted too."""
    out = _Tty()
    configure_logging(stream=out)
    log_event(logging.getLogger("x"), "delivery.sent", "sent", notification_id="n1", reason=f"ok {secret}")
    ts, level, event, rest = out.getvalue().rstrip("\n").split(maxsplit=3)
    assert TS.match(ts)
    assert (level, event, rest) == ("INFO", "delivery.sent", 'sent notification_id=n1 reason="ok ***"')


def test_human_mode_appends_redacted_traceback(root_state: None, secret: str) -> None:
    """The terminal shape puts the traceback under the line, secrets redacted."""
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    try:
        raise RuntimeError(secret)
    except RuntimeError:
        logging.getLogger("x").exception("boom")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith(f"ERROR   {DEFAULT_EVENT} boom")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "RuntimeError: ***"
    assert secret not in out.getvalue()


def test_json_is_the_default_off_a_tty(root_state: None) -> None:
    """Without a terminal (the journal, a pipe) lines are JSON."""
    out = io.StringIO()
    configure_logging(stream=out)
    log_event(logging.getLogger("x"), "a.b")
    assert _lines(out)[0]["event"] == "a.b"


def test_lines_to_the_journal_carry_their_priority(
    root_state: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd (JOURNAL_STREAM names the stream's device and inode) each line starts with its
    syslog priority, which journald keeps: `journalctl -p err` finds the errors. Elsewhere, none."""
    path = tmp_path / "journal"
    with path.open("w") as out:
        info = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        configure_logging(json=True, stream=out)
        logging.getLogger("t").error("the store failed")
        logging.getLogger("t").info("fine")
    error, fine = path.read_text().splitlines()
    assert error.startswith("<3>{") and json.loads(error[3:])["msg"] == "the store failed"
    assert fine.startswith("<6>{")
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # another stream's: a terminal, a pipe
    elsewhere = io.StringIO()
    configure_logging(json=True, stream=elsewhere)
    logging.getLogger("t").error("x")
    assert elsewhere.getvalue().startswith("{")


def test_scheduler_chatter_and_console_colours_stay_out(stream: io.StringIO) -> None:
    """APScheduler's INFO line per job run (three in five lines of an idle daemon) is dropped, its
    warnings kept; uvicorn's ANSI-coloured copy of its message is not a field."""
    logging.getLogger("apscheduler.executors.default").info("Running job ...")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
    logging.getLogger("t.uvicorn").info("Started", extra={"color_message": "\x1b[1mStarted\x1b[0m"})
    lines = _lines(stream)
    assert [line["msg"] for line in lines] == ["Run time of job was missed", "Started"]
    assert "color_message" not in lines[1]
