"""Suite-wide guards."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from daemon.logs import registered_secrets


class _Everything(logging.Handler):
    """Keeps the text of every log record of the session, as the record was made (before redaction)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.module == "test_logs":
            return  # those tests log secrets on purpose, to prove the formatter redacts them
        text = f"{record.name} {record.getMessage()} {record.__dict__}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        self.texts.append(text)


@pytest.fixture(scope="session", autouse=True)
def no_secret_is_ever_logged() -> Iterator[None]:
    """Across every scenario of the suite, no configured secret reaches any log record."""
    handler = _Everything()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    # httpcore's DEBUG trace is one line per socket step and never carries header values
    logging.getLogger("httpcore").setLevel(logging.INFO)
    root.addHandler(handler)
    yield
    root.removeHandler(handler)
    root.setLevel(level)
    secrets = [s for s in registered_secrets() if len(s) >= 8]
    leaks = [(s[:4] + "…", t[:200]) for t in handler.texts for s in secrets if s in t]
    assert not leaks, f"secrets reached log records: {leaks[:5]}"


@pytest.fixture(autouse=True)
def the_collector_as_it_was() -> Iterator[None]:
    """A test that reloads a daemon in process runs ``daemon.heap.settle``, which freezes every
    object alive and spaces young collections: undone after each test, so no later test finds
    objects it dropped kept alive, or collections rarer than Python's default."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
