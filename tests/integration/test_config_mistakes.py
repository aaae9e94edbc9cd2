"""Mistakes ops engineers make in the YAML, and what they get: FILE:LINE: path: message, never a
traceback; a reload that fails keeps the running configuration and says why; rotated secrets are
masked. Found by a review of configuration loading; each test failed on the code before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.config import ConfigError, load_config, parse_config
from daemon.logs import redact, registered_secrets

REPO = Path(__file__).resolve().parents[2]

BASE = """\
store: {path: /tmp/x.db}
api:
  tokens:
    - name: t
      token: "${TOKEN}"
provider:
  name: p
  smtp: {host: smtp.example.com, username: ops@example.com, password: "${PW}"}
channels:
  email: {type: email, to: [ops@example.com]}
  hook:
    type: webhook
    url: https://hooks.example.com/x
    secret: "${WH}"
routes:
  - name: all
    match: {}
    healthy: [email]
    outage: [hook]
"""
ENV = {"TOKEN": "tok-SECRET-123", "PW": "pw-SECRET-456", "WH": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
PROVIDER = (
    'provider:\n  name: p\n  smtp: {host: smtp.example.com, username: ops@example.com, password: "${PW}"}\n'
)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="f.yaml", env=ENV)
    return [str(p) for p in caught.value.problems]


# 1. provider: with its children not indented (or empty) crashes with TypeError
@pytest.mark.parametrize(
    "section", ["provider:\nname: p\nsmtp: {host: smtp.example.com}\n", "provider:\n", "provider: 5\n"]
)
def test_provider_not_a_mapping_is_a_config_error(section: str) -> None:
    assert problems(BASE.replace(PROVIDER, section))[0].startswith("f.yaml:6: provider")


def test_check_command_exits_78_for_unindented_provider(tmp_path: Path) -> None:
    cfg = tmp_path / "bc.yaml"
    cfg.write_text(BASE.replace(PROVIDER, "provider:\nname: p\nsmtp: {host: smtp.example.com}\n"))
    run = subprocess.run(
        [sys.executable, "-m", "daemon", "check", "-c", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
    )
    assert run.returncode == 78, run.stderr[-300:]


# 2. YAML merge key: overriding a merged key (the point of <<) is refused as a duplicate
def test_merge_key_override_is_not_a_duplicate() -> None:
    text = "x-retry: &r {initial: 1s, max: 1m, max_attempts: 3}\n" + BASE.replace(
        '    secret: "${WH}"', '    secret: "${WH}"\n    retry: {<<: *r, max_attempts: 5}'
    )
    assert parse_config(text, env=ENV).channels["hook"].retry.max_attempts == 5


# 3. errors inside checks[].smtp / checks[].imap lose the section name and point at the "- type:" line
def test_check_smtp_error_names_path_and_line() -> None:
    text = BASE.replace(
        "  name: p\n",
        "  name: p\n  checks:\n    - type: smtp\n      every: 30s\n"
        "      smtp:\n        host: other.example.com\n        port: 99999\n",
    )
    assert problems(text) == [
        "f.yaml:13: provider.checks[0].smtp.port: Input should be less than or equal to 65535"
    ]


def test_imap_check_error_names_path_and_line() -> None:
    text = BASE.replace(
        "  name: p\n",
        "  name: p\n  checks:\n    - type: smtp\n    - type: imap\n"
        "      imap:\n        host: imap.example.com\n        username: ops@example.com\n"
        '        pasword: "${PW}"\n',
    )
    assert problems(text) == ["f.yaml:14: provider.checks[1].imap.pasword: unknown key 'pasword'"]


# 4. whole-config checks are reported at line 1 with no path
@pytest.mark.parametrize(
    ("change", "expected_prefix"),
    [
        (
            lambda t: t.replace("    match: {}", "    active_in: [office]\n    match: {}"),
            "f.yaml:17: routes[0].active_in",
        ),
        (lambda t: t + "drills:\n  schedule: '0 10 1 * *'\n  routes: [al]\n", "f.yaml:22: drills.routes"),
        (
            lambda t: t + "intake:\n  workers: {listen: '127.0.0.1:8025'}\n",
            "f.yaml:21: intake.workers.listen",
        ),
    ],
)
def test_cross_section_problem_names_its_line_and_path(change, expected_prefix: str) -> None:
    (problem,) = problems(change(BASE))
    assert problem.startswith(expected_prefix), problem


# 5. an unterminated reference is taken as a literal password
def test_unterminated_reference_is_an_error() -> None:
    text = BASE.replace('"${PW}"', '"${PW"')
    assert problems(text)[0].startswith("f.yaml:8: provider.smtp.password:")


# 6. an out-of-range duration crashes (OverflowError) instead of a problem
def test_huge_duration_is_a_config_error() -> None:
    assert problems(BASE + "dispatch: {poll: 9999999999d}\n")[0].startswith("f.yaml:20: dispatch.poll")


# 7. non-UTF-8 byte: no line number
def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bc.yaml"
    cfg.write_bytes(b"store: {path: /tmp/x.db}\n# Z\xfcrich office\napi: {tokens: []}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cfg, env=ENV)
    assert str(caught.value).startswith(f"{cfg}:2:"), str(caught.value)


# 8. SIGHUP reload with a file that crashed validation: the exception escaped, nothing was logged
async def test_reload_of_unindented_provider_is_rejected_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    cfg = tmp_path / "bc.yaml"
    text = BASE.replace("/tmp/x.db", str(tmp_path / "x.db"))
    cfg.write_text(text)
    daemon = Daemon(load_config(cfg), config_path=cfg)
    await daemon.store.open()
    try:
        cfg.write_text(text.replace(PROVIDER, "provider:\nname: p\nsmtp: {host: smtp.example.com}\n"))
        daemon.reload()  # what the SIGHUP handler calls
    finally:
        await daemon.store.close()
    failed = [r for r in caplog.records if getattr(r, "event", None) == "config.reload_failed"]
    assert failed
    assert f"{cfg}:6: provider" in failed[0].getMessage()
    assert daemon.config.provider.name == "p"


# 9. a reload did not register the new configuration's secrets for log redaction
async def test_reload_registers_rotated_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    cfg = tmp_path / "bc.yaml"
    secret = tmp_path / "token"
    secret.write_text("first-token-AAAA\n")
    text = BASE.replace("/tmp/x.db", str(tmp_path / "x.db"))
    cfg.write_text(text.replace('"${TOKEN}"', f'"${{file:{secret}}}"'))
    daemon = Daemon(load_config(cfg), config_path=cfg)
    await daemon.store.open()
    try:
        secret.write_text("rotated-token-BBBB\n")
        daemon.reload()
    finally:
        await daemon.store.close()
    assert {"first-token-AAAA", "rotated-token-BBBB"} <= registered_secrets()
    assert redact("rotated-token-BBBB") == "***"
