"""Secret references: environment, NAME_FILE, files, systemd credentials, escapes, and their failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, parse_config
from daemon.secrets import SecretReferenceError, SecretResolver, resolve_references

CONFIG = """\
store: {path: /tmp/backchannel.db}
api:
  tokens: [{name: ci, token: "TOKEN_REF"}]
provider:
  name: p
  smtp: {host: smtp.example.com, username: ops@example.com, password: "PASSWORD_REF"}
channels:
  email: {type: email}
routes:
  - {match: {}, healthy: [email], outage: defer}
"""


def config_text(api_ref: str = "${API_TOKEN}", smtp_ref: str = "${SMTP_PASSWORD}") -> str:
    return CONFIG.replace("TOKEN_REF", api_ref).replace("PASSWORD_REF", smtp_ref)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "alpha"}, "alpha"),
        ("x-${A}-${B}-y", {"A": "1", "B": "2"}, "x-1-2-y"),
        ("${ A }", {"A": "spaced"}, "spaced"),
        ("plain", {}, "plain"),
        ("$${A}", {"A": "alpha"}, "${A}"),
        ("cost: $5", {}, "cost: $5"),
        ("${A}", {"A": "", "A_FILE": "/nonexistent"}, ""),
    ],
)
def test_environment_references_resolve(text: str, env: dict[str, str], expected: str) -> None:
    """${VAR} substitutes the variable, anywhere in the string; $${ is a literal ${."""
    assert resolve_references(text, env) == expected


def test_var_file_is_read_when_var_is_unset(tmp_path: Path) -> None:
    """VAR_FILE names a file holding the value; one trailing newline is dropped."""
    (tmp_path / "pw").write_text("s3cret\n\n")
    assert resolve_references("${PW}", {"PW_FILE": str(tmp_path / "pw")}) == "s3cret\n"


def test_file_reference_reads_the_file(tmp_path: Path) -> None:
    """${file:/path} is the file's contents without the trailing newline."""
    (tmp_path / "key").write_text("file-secret\r\n")
    assert resolve_references(f"${{file:{tmp_path / 'key'}}}", {}) == "file-secret"


def test_credential_reference_reads_the_credentials_directory(tmp_path: Path) -> None:
    """${credential:name} reads $CREDENTIALS_DIRECTORY/name (systemd LoadCredential=)."""
    (tmp_path / "smtp-password").write_text("cred-secret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert resolve_references("${credential:smtp-password}", env) == "cred-secret"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("${MISSING}", {}, "environment variable MISSING is not set (nor MISSING_FILE)"),
        ("${MISSING}", {"MISSING_FILE": "/nonexistent/pw"}, "MISSING_FILE: cannot read /nonexistent/pw"),
        ("${file:/nonexistent/key}", {}, "${file:/nonexistent/key}: cannot read /nonexistent/key"),
        ("${credential:token}", {}, "needs CREDENTIALS_DIRECTORY"),
        ("${credential:../etc/passwd}", {"CREDENTIALS_DIRECTORY": "/tmp"}, "bad credential name"),
        ("${credential:..}", {"CREDENTIALS_DIRECTORY": "/tmp"}, "bad credential name"),
        ("${}", {}, "bad reference ${}"),
        ("${9LIVES}", {}, "bad reference ${9LIVES}"),
        ("${vault:x}", {}, "bad reference ${vault:x}"),
    ],
)
def test_unresolvable_reference_raises(text: str, env: dict[str, str], message: str) -> None:
    """Each failure names the reference and why, as a SecretReferenceError."""
    with pytest.raises(SecretReferenceError) as caught:
        resolve_references(text, env)
    assert message in str(caught.value)


def test_missing_credential_file_names_the_credential(tmp_path: Path) -> None:
    """A credential that systemd did not provide is named in the error."""
    with pytest.raises(SecretReferenceError, match=r"\$\{credential:absent\}: cannot read"):
        resolve_references("${credential:absent}", {"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_redact_masks_every_resolved_value() -> None:
    """Values the resolver substituted are masked in any text given back to it."""
    resolver = SecretResolver({"A": "topsecret", "B": "ab"})
    resolver.resolve("${A}${B}")
    assert resolver.redact("got topsecret and ab") == "got *** and ab"


def test_secrets_resolve_in_the_configuration(tmp_path: Path) -> None:
    """References work in the config for env, file and credential sources."""
    (tmp_path / "pw").write_text("file-pw\n")
    (tmp_path / "api").write_text("cred-token\n")
    text = config_text(api_ref="${credential:api}", smtp_ref=f"${{file:{tmp_path / 'pw'}}}")
    config = parse_config(text, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.api_tokens() == {"ci": "cred-token"}
    assert config.provider.smtp.password is not None
    assert config.provider.smtp.password.get_secret_value() == "file-pw"


def test_missing_secrets_are_config_problems_with_file_line_and_path() -> None:
    """Every unresolvable reference is its own problem, at its line and path."""
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(), filename="bc.yaml", env={})
    assert [(p.file, p.line, p.path) for p in caught.value.problems] == [
        ("bc.yaml", 3, "api.tokens[0].token"),
        ("bc.yaml", 6, "provider.smtp.password"),
    ]
    assert "environment variable SMTP_PASSWORD is not set" in caught.value.problems[1].message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "${SECRET}"),
        ("listen", "${SECRET}"),
        ("port", "${SECRET}"),
        ("url", "https://example.com/${SECRET}/bad url"),
    ],
)
def test_resolved_secret_never_appears_in_an_error(field: str, value: str) -> None:
    """Even where validation quotes its input, a resolved secret is masked in str(error)."""
    secret = "sekrit-value-42"
    text = config_text(api_ref="${SECRET}", smtp_ref="${SECRET}")
    text = {
        "type": text.replace("{type: email}", "{type: '" + value + "'}"),
        "listen": text.replace("api:\n", f"api:\n  listen: '{value}'\n"),
        "port": text.replace("host: smtp.example.com,", f"host: smtp.example.com, port: '{value}',"),
        "url": text.replace("{type: email}", f"{{type: webhook, url: '{value}', secret: '{value}'}}"),
    }[field]
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="bc.yaml", env={"SECRET": secret})
    assert caught.value.problems
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value.problems)
