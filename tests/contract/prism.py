"""Run Stoplight Prism as a mock of a vendor's OpenAPI spec, for contract tests.

Prism is installed with npm into ``.cache/prism`` on first use and started directly (killing
``npx`` would leave the server running). The specs live in ``../shared/specs`` beside the
checkout; without them the tests skip, saying why. With ``CI=true`` a Prism that cannot be
installed or started fails the run instead of skipping, so CI never goes green by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO.parent / "shared" / "specs"
PRISM_DIR = REPO / ".cache" / "prism"
PRISM_BIN = PRISM_DIR / "node_modules" / ".bin" / "prism"
PRISM_PACKAGE = "@stoplight/prism-cli@5"
INSTALL_TIMEOUT_S = 300.0
START_TIMEOUT_S = 60.0


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI=true: a contract test that silently skips in CI proves nothing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Prism unavailable in CI: {reason}")
    pytest.skip(reason)


def spec_path(name: str) -> Path:
    if not SPECS.is_dir():
        pytest.skip(f"vendor specs not found at {SPECS} (the ../shared checkout is absent)")
    path = SPECS / name
    if not path.is_file():
        pytest.skip(f"vendor spec {path} not found")
    return path


def prism_binary() -> Path:
    """The Prism executable, installed into .cache/prism if it is not there yet."""
    if PRISM_BIN.exists():
        return PRISM_BIN
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed, so Prism cannot be")
    PRISM_DIR.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(PRISM_DIR), "--no-audit", "--no-fund", PRISM_PACKAGE]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        unavailable(f"npm install {PRISM_PACKAGE} took longer than {INSTALL_TIMEOUT_S:.0f}s")
    if done.returncode != 0 or not PRISM_BIN.exists():
        unavailable(f"npm install {PRISM_PACKAGE} failed: {done.stderr.strip()[-500:]}")
    return PRISM_BIN


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _listening(port):
        if process.poll() is not None:
            unavailable(f"Prism exited with {process.returncode}: {log_path.read_text()[-1000:]}")
        if time.monotonic() > deadline:
            unavailable(f"Prism not listening after {START_TIMEOUT_S:.0f}s: {log_path.read_text()[-1000:]}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def prism_mock(spec_name: str) -> Iterator[str]:
    """Serve ``spec_name`` from the shared specs with Prism; yields ``http://127.0.0.1:PORT``."""
    spec = spec_path(spec_name)
    binary = prism_binary()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="prism-") as tmp:
        log_path = Path(tmp) / "prism.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [str(binary), "mock", str(spec), "-h", "127.0.0.1", "-p", str(port)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                _wait_ready(process, port, log_path)
                yield f"http://127.0.0.1:{port}"
            finally:
                _stop(process)
