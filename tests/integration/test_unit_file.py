"""The systemd unit verifies cleanly, scores as hardened, and install.sh stages it idempotently."""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import stat
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from daemon.dispatch_policy import DispatchSettings
from tests.support import installed

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "backchannel.service"
INSTALL = DEPLOY / "install.sh"
EXEC_START = "/usr/local/bin/backchannel"
MAX_EXPOSURE = 1.5


def _systemd_analyze() -> str:
    return installed("systemd-analyze", package="systemd")


def _settings(unit: Path) -> dict[str, list[str]]:
    """Each key's values in file order (a unit may repeat a key, e.g. SystemCallFilter=)."""
    found: dict[str, list[str]] = defaultdict(list)
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found[key.strip()].append(value.strip())
    return found


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit as shipped, with ExecStart's binary pointed at a stub when it is not installed here.

    `systemd-analyze verify` checks that ExecStart= is executable, and a test must not write to
    /usr/local/bin; every other line is verified exactly as shipped.
    """
    if Path(EXEC_START).exists():
        return UNIT
    stub = tmp_path / "bin" / "backchannel"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copy = tmp_path / UNIT.name
    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC_START} ") == 1
    copy.write_text(text.replace(f"ExecStart={EXEC_START} ", f"ExecStart={stub} "))
    return copy


def test_unit_verifies_without_any_output(tmp_path: Path) -> None:
    """`systemd-analyze verify` prints nothing at all (it exits 0 even on a misspelled key)."""
    unit = _verifiable_copy(tmp_path)
    result = subprocess.run(
        [_systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.stdout + result.stderr, result.returncode) == ("", 0)


def test_unit_security_exposure_is_low() -> None:
    """`systemd-analyze security --offline=yes` rates the unit's exposure at 1.5 or lower."""
    result = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for backchannel\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_runs_the_daemon_as_the_issue_requires() -> None:
    """The unit is a notify service with watchdog, HUP reload and the no-restart exit code 78."""
    settings = _settings(UNIT)
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": [f"{EXEC_START} run -c /etc/backchannel/backchannel.yaml"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "WatchdogSec": ["30"],
        "Restart": ["on-failure"],
        "RestartPreventExitStatus": ["78"],
        "User": ["backchannel"],
        "StateDirectory": ["backchannel"],
        "ConfigurationDirectory": ["backchannel"],
        "MemoryDenyWriteExecute": ["yes"],
        "CapabilityBoundingSet": [""],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
    }
    assert {key: settings[key] for key in expected} == expected
    assert settings["LoadCredential"] and settings["SystemCallFilter"][0] == "@system-service"


def test_stop_timeout_outlasts_the_drain_grace_period() -> None:
    """systemd waits long enough for the default drain before it sends SIGKILL."""
    (timeout,) = _settings(UNIT)["TimeoutStopSec"]
    assert int(timeout) >= DispatchSettings().drain_grace_s + 30


def _snapshot(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    tree = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.name.startswith(".") else b""
        tree[str(path.relative_to(root))] = (stat.filemode(info.st_mode), info.st_uid, info.st_gid, content)
    return tree


def _install(destdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(INSTALL), "--destdir", str(destdir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "example.yaml"
    path.write_text("store: {path: /var/lib/backchannel/backchannel.db}\n")
    return path


def test_install_stages_unit_directories_and_config(tmp_path: Path, example: Path) -> None:
    """install.sh into a DESTDIR lays out the unit, sysusers file, directories and a 0640 config."""
    root = tmp_path / "root"
    _install(root, "--example-config", str(example))
    tree = _snapshot(root)
    assert tree["usr/local/lib/systemd/system/backchannel.service"][::3] == ("-rw-r--r--", UNIT.read_bytes())
    assert tree["etc/sysusers.d/backchannel.conf"][0] == "-rw-r--r--"
    assert tree["etc/backchannel"][0] == "drwxr-x---"
    assert tree["etc/backchannel/credentials"][0] == "drwx------"
    assert tree["var/lib/backchannel"][0] == "drwx------"
    assert tree["etc/backchannel/backchannel.yaml"][::3] == ("-rw-r-----", example.read_bytes())
    assert tree["usr/local/share/doc/backchannel/deployment.md"][0] == "-rw-r--r--"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("systemd-sysusers") is None, reason="needs root")
def test_install_creates_the_user_and_owns_directories(tmp_path: Path, example: Path) -> None:
    """As root, the staged tree gets the backchannel user, and the state directory belongs to it."""
    root = tmp_path / "root"
    _install(root, "--example-config", str(example))
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    uid, gid = int(passwd["backchannel"][2]), int(passwd["backchannel"][3])
    tree = _snapshot(root)
    assert tree["var/lib/backchannel"][1:3] == (uid, gid)
    assert tree["etc/backchannel"][1:3] == (0, gid)
    assert tree["etc/backchannel/backchannel.yaml"][1:3] == (0, gid)
    assert tree["etc/backchannel/credentials"][1:3] == (0, 0)


def test_install_is_idempotent_and_keeps_the_config(tmp_path: Path, example: Path) -> None:
    """A second run changes nothing; an edited config survives and a loosened mode is tightened."""
    root = tmp_path / "root"
    _install(root, "--example-config", str(example))
    first = _snapshot(root)
    _install(root, "--example-config", str(example))
    assert _snapshot(root) == first
    config = root / "etc/backchannel/backchannel.yaml"
    config.write_text("edited: true\n")
    config.chmod(0o644)
    _install(root, "--example-config", str(example))
    assert (config.read_text(), stat.filemode(config.stat().st_mode)) == ("edited: true\n", "-rw-r-----")


def test_install_prefix_moves_the_binary_path(tmp_path: Path, example: Path) -> None:
    """--prefix installs under PREFIX and points ExecStart= and Documentation= there."""
    root = tmp_path / "root"
    _install(root, "--prefix", "/opt/bc", "--example-config", str(example))
    settings = _settings(root / "opt/bc/lib/systemd/system/backchannel.service")
    assert settings["ExecStart"] == ["/opt/bc/bin/backchannel run -c /etc/backchannel/backchannel.yaml"]
    assert settings["Documentation"] == ["file:/opt/bc/share/doc/backchannel/deployment.md"]
    assert (root / "opt/bc/share/doc/backchannel/deployment.md").is_file()


def test_install_without_example_config_warns(tmp_path: Path) -> None:
    """Without an example to copy, install.sh says so instead of inventing a configuration."""
    result = _install(tmp_path / "root", "--example-config", str(tmp_path / "missing.yaml"))
    assert "no example configuration" in result.stdout
    assert not (tmp_path / "root/etc/backchannel/backchannel.yaml").exists()


# systemd's MemoryDenyWriteExecute= filter, as seccomp_memory_deny_write_execute() builds it in
# src/shared/seccomp-util.c: EPERM for W+X mmap, for any mprotect/pkey_mprotect adding PROT_EXEC, and for
# shmat with SHM_EXEC. Applied through libseccomp, which systemd itself links against.
_DENY_WRITE_EXECUTE = """
import ctypes, ctypes.util, errno, mmap

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
W, X, SHM_EXEC, MASKED_EQ = mmap.PROT_WRITE, mmap.PROT_EXEC, 0o100000, 7
for name, mask in (("mmap", W | X), ("mprotect", X), ("pkey_mprotect", X), ("shmat", SHM_EXEC)):
    cmp = Cmp(2, MASKED_EQ, mask, mask)
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    assert lib.seccomp_rule_add_array(ctx, 0x00050000 | errno.EPERM, nr, 1, ctypes.byref(cmp)) == 0, name
assert lib.seccomp_load(ctx) == 0
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long
]
MAP_FAILED = ctypes.c_void_p(-1).value
assert libc.mmap(None, 4096, W | X | mmap.PROT_READ, 0x22, -1, 0) == MAP_FAILED, "filter inactive"
"""

_EXERCISE = """
import importlib, pkgutil, sys
import channels
for module in ("uvloop", "httptools", "pydantic_core", "aiohttp", "slack_sdk.web.async_client",
               "twilio.rest", "daemon.app",
               *(f"channels.{m.name}" for m in pkgutil.iter_modules(channels.__path__))):
    importlib.import_module(module)
from daemon.cli import main
sys.exit(main(["demo"]))
"""


def test_dependencies_run_under_memory_deny_write_execute() -> None:
    """The demo (uvloop, uvicorn/httptools, pydantic-core, SQLite, SMTP) runs under systemd's W^X filter."""
    if ctypes.util.find_library("seccomp") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("libseccomp is missing in CI: install Debian's libseccomp2 in .ci/run")
        pytest.skip("libseccomp is not installed (apt-get install libseccomp2)")
    result = subprocess.run(
        [sys.executable, "-c", _DENY_WRITE_EXECUTE + _EXERCISE],
        cwd=DEPLOY.parent,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "nothing lost" in result.stdout
