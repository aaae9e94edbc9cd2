"""End-to-end tests against real servers on 127.0.0.1; here, the Postfix + Dovecot mail stack.

This module finds the stack for any tier that needs it (the round-trip integration tests too):
:func:`require_stack` skips naming what is missing, or fails when ``CI=true``. Tests that use
the stack hold a shared lock, and the drills that stop its daemons an exclusive one, so several
test runs on one machine never see each other's drills.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("mailstack.sh")
CONF_DIR = Path(os.environ.get("MAILSTACK_CONF_DIR", "/etc/backchannel-mailstack"))
LOCK_PATH = Path(tempfile.gettempdir()) / "backchannel-mailstack.lock"
SETUP_HINT = (
    f"run `sudo bash {SCRIPT.relative_to(Path.cwd()) if SCRIPT.is_relative_to(Path.cwd()) else SCRIPT} setup`"
)


@dataclass(frozen=True)
class MailStack:
    host: str
    smtp_port: int
    submission_port: int
    imap_port: int
    imaps_port: int
    user: str
    control_user: str
    password: str
    ca_file: str

    def ctl(self, *args: str) -> None:
        """Run ``mailstack.sh`` with ``args`` (start/stop a daemon); its output goes in the error."""
        # a file, not a pipe: should a daemon keep the script's stderr, reading a pipe would never end
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                ["bash", str(SCRIPT), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60
            )
            out.seek(0)
            if done.returncode != 0:
                raise RuntimeError(f"mailstack.sh {' '.join(args)} failed: {out.read().strip()}")


def find_stack() -> MailStack | str:
    """The running stack, or what is missing, in words."""
    env_file = CONF_DIR / "stack.env"
    if not env_file.is_file():
        return f"no mail stack: {env_file} is missing ({SETUP_HINT})"
    env = dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and line[0] != "#"
    )
    stack = MailStack(
        env["MAILSTACK_HOST"], int(env["MAILSTACK_SMTP_PORT"]), int(env["MAILSTACK_SUBMISSION_PORT"]),
        int(env["MAILSTACK_IMAP_PORT"]), int(env["MAILSTACK_IMAPS_PORT"]), env["MAILSTACK_USER"],
        env["MAILSTACK_CONTROL_USER"], env["MAILSTACK_PASSWORD"], env["MAILSTACK_CA_FILE"],
    )  # fmt: skip
    closed = [p for p in (stack.smtp_port, stack.submission_port, stack.imap_port) if not _listening(p)]
    if closed:
        return f"mail stack not running: nothing on 127.0.0.1:{closed} (run `sudo bash {SCRIPT} start`)"
    return stack


def require_stack() -> MailStack:
    found = find_stack()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {found}: .ci/run must run mailstack.sh setup")
        pytest.skip(found)
    return found


@contextlib.contextmanager
def stack_lock(exclusive: bool, timeout_s: float = 90.0) -> Iterator[None]:
    """Shared for tests that use the stack, exclusive for drills that stop part of it."""
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mail stack busy (lock {LOCK_PATH}) for {timeout_s:g}s") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def wait_listening(port: int, *, up: bool, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _listening(port) != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"127.0.0.1:{port} still {'closed' if up else 'listening'} after {timeout_s}s")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0
