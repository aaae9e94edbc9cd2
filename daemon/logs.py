"""Structured logs: one JSON object per line for the journal, ``key=value`` lines on a terminal.

Every line carries the stable keys ``ts`` (ISO 8601, UTC), ``level``, ``event`` (a dotted name such as
``delivery.sent`` that dashboards and alerts can match on, unlike the free-text ``msg``), ``logger`` and
``msg``, followed by the line's own fields (``notification_id``, ``channel``...). Fields come from
:func:`log_event` or from ``extra={"event": ..., ...}`` on a plain logging call.

Registered secrets are replaced by ``***`` in everything a line carries, the traceback included: the
formatter is the last place a value passes before it leaves the process.
"""

from __future__ import annotations

import json as jsonlib
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "***"
DEFAULT_EVENT = "log"

_FIELDS_ATTR = "_backchannel_fields"
_STABLE_KEYS = ("ts", "level", "event", "logger", "msg")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
#: not the line's fields: the record's own attributes, and uvicorn's copy of its message with ANSI
#: colours (``color_message``) for its own console formatter
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
    _FIELDS_ATTR,
}


class _Secrets:
    """The registered secret values, matched longest first so one secret never leaks a suffix."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if not value:
            return
        with self._lock:
            self._values.add(value)
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def values(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._values)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def in_any(self, texts: list[str]) -> bool:
        """Whether a secret may occur in one of ``texts``, with one search over them all. A match
        across two of them (a secret holding the NUL that joins them) is a false alarm, never a
        miss: the caller then redacts each text, as it would have without this check."""
        pattern = self._pattern
        return pattern is not None and pattern.search("\0".join(texts)) is not None


_secrets = _Secrets()


def register_secret(value: str) -> None:
    """Never let ``value`` appear in a log line again: it is printed as ``***``."""
    _secrets.add(value)


def registered_secrets() -> frozenset[str]:
    """Every value registered so far (for tests that prove none was ever logged)."""
    return _secrets.values()


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return _secrets.redact(text)


def log_event(
    logger: logging.Logger,
    event: str,
    msg: str = "",
    *,
    level: int = logging.INFO,
    exc_info: BaseException | bool | None = None,
    **fields: Any,
) -> None:
    """Log one line named ``event`` (e.g. ``delivery.sent``) carrying ``fields`` as its own keys."""
    if logger.isEnabledFor(level):
        extra = {"event": event, _FIELDS_ATTR: fields}
        logger.log(level, msg or event, exc_info=exc_info, extra=extra, stacklevel=2)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The line's own fields: ``extra=`` attributes plus those given to :func:`log_event`."""
    fields = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and k != "event"}
    fields.update(getattr(record, _FIELDS_ATTR, {}))
    return {k: v for k, v in fields.items() if k not in _STABLE_KEYS}


def _timestamp(record: logging.LogRecord) -> str:
    """``2026-11-28T02:22:42.123Z``; the part up to the second is made once per second."""
    global _second
    # rounded to the microsecond first, as datetime.fromtimestamp does, then cut to the millisecond
    fraction, seconds = math.modf(record.created)
    whole, micros = int(seconds), round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    cached = _second
    if whole != cached[0]:
        cached = _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micros // 1000:03d}Z"


#: the last second :func:`_timestamp` formatted, and its text (replaced whole: threads may log)
_second: tuple[int, str] = (-1, "")


def _plain(value: Any, strings: list[str]) -> bool:
    """Whether ``value`` is JSON as it is (strings, numbers, lists, dicts keyed by strings), every
    string in it, keys included, appended to ``strings``."""
    if isinstance(value, str):
        strings.append(value)
        return True
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return False
            strings.append(k)
            if not _plain(v, strings):
                return False
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v, strings) for v in value)
    return False


def _scrub(value: Any) -> Any:
    """A JSON-ready copy of ``value`` with secrets redacted in every string, keys included."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {redact(str(k)): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    return redact(str(value))


_ENCODER = jsonlib.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, stable keys first."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "event": str(getattr(record, "event", DEFAULT_EVENT)),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(record_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Most lines are plain JSON and hold no secret: one search over all their strings, and
        # the copy that redacts and converts only for the others.
        strings: list[str] = []
        if not _plain(line, strings) or _secrets.in_any(strings):
            line = _scrub(line)
        return _ENCODER.encode(line)


class HumanFormatter(logging.Formatter):
    """``ts level event msg key=value...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", DEFAULT_EVENT)
        parts = [_timestamp(record), f"{record.levelname:<7}", str(event), record.getMessage()]
        parts += [f"{k}={_human_value(v)}" for k, v in record_fields(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return redact(text)


def _human_value(value: Any) -> str:
    text = str(value)
    return jsonlib.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text


#: what stands in a record of aiosmtpd's for what the client sent
CLIENT_TEXT = "[client text]"


class _ClientTextFilter(logging.Filter):
    """Keeps aiosmtpd's records, drops what the client sent from them.

    aiosmtpd logs command lines, unknown commands (``%r unrecognised: %s``, at WARNING) and its
    replies, which echo them. A client pipelining AUTH LOGIN's base64 answers after a 538 or 503
    has them read as unknown commands, so its login and password would reach the log (upper-cased,
    still decodable). aiosmtpd's records name the peer (a tuple) and then the text: the peer, a
    command's name (``%r over limit for %s``: repeated AUTH attempts, which an operator watches) and
    the record's message template stay, every other argument is replaced.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Session.login_data is deprecated"):
            return False  # aiosmtpd 1.4 warns so about its own code at every successful AUTH
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(a if _kept(a) else CLIENT_TEXT for a in record.args)
        return True


#: the commands aiosmtpd serves, whose names its records may carry
_SMTP_VERBS = frozenset(
    {
        "HELO",
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "RSET",
        "NOOP",
        "QUIT",
        "VRFY",
        "EXPN",
        "HELP",
        "AUTH",
        "STARTTLS",
    }
)


def _kept(arg: object) -> bool:
    return isinstance(arg, tuple) or (isinstance(arg, str) and arg in _SMTP_VERBS)


_client_text_filter = _ClientTextFilter()


class _BackchannelHandler(logging.StreamHandler[TextIO]):
    """Marks the handler :func:`configure_logging` installed, so a second call replaces it."""


#: syslog priorities (sd-daemon(3)'s ``<N>`` prefixes) by logging level
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalPriority(logging.Formatter):
    """Each line prefixed with its syslog priority, ``<3>{...}``, which journald strips and keeps
    as the entry's priority (``SyslogLevelPrefix=yes``, the default): without it every line was
    priority 6 and ``journalctl -p err`` missed the errors."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 3 if record.levelno > logging.WARNING else 6)
        return f"<{priority}>" + self._inner.format(record)


def _to_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal's: systemd sets ``JOURNAL_STREAM`` to its ``device:inode``."""
    expected = environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


def configure_logging(*, json: bool | None = None, level: str = "INFO", stream: TextIO = sys.stderr) -> None:
    """Send every logger's records to ``stream``: JSON unless it is a terminal (or ``json`` says)."""
    if json is None:
        json = not _is_tty(stream)
    handler = _BackchannelHandler(stream)
    formatter: logging.Formatter = JsonFormatter() if json else HumanFormatter()
    handler.setFormatter(_JournalPriority(formatter) if _to_journal(stream, os.environ) else formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BackchannelHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Neither format prints them: not looked up for every record (the logging HOWTO's optimizations)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiosmtpd logs every SMTP command at INFO and every DATA line at DEBUG: message content
    aiosmtpd = logging.getLogger("mail.log")
    aiosmtpd.setLevel(logging.WARNING)
    aiosmtpd.addFilter(_client_text_filter)  # once: addFilter skips a filter already there
    # APScheduler logs every run of every job at INFO ("Running job...", "...executed
    # successfully"): three in five lines of an idle daemon's log; its warnings (a run missed) stay
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # httpx logs every request at INFO ("HTTP Request: GET <url> ..."): a line per check run
    # beside its check.result, and the whole URL, query and user:password@ included, which the
    # checks otherwise show without them (daemon/checks/_http.py, shown())
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())
