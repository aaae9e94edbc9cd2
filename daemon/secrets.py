"""Secret references inside configuration strings, resolved at load time.

Forms, usable anywhere inside a string scalar::

    ${VAR}              the environment variable VAR; if unset, the file named by VAR_FILE
    ${file:/path}       the file's contents
    ${credential:name}  $CREDENTIALS_DIRECTORY/name (systemd ``LoadCredential=``)
    $${                 a literal ``${``

File contents lose one trailing newline, since ``echo secret > file`` adds one. Errors name the
reference, never a resolved value. The environment is passed in: only the configuration module
decides where it comes from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: systemd credential names are file names; see systemd.exec(5), "Credentials"
_CREDENTIAL = re.compile(r"[A-Za-z0-9_.@-]+")


class SecretReferenceError(ValueError):
    """A secret reference could not be resolved."""


class SecretResolver:
    """Resolves references in strings, remembering every value it substituted so errors can hide them."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.resolved: set[str] = set()

    def resolve(self, text: str) -> str:
        """``text`` with every reference replaced; raises :class:`SecretReferenceError` on a bad one."""
        if "${" not in text:
            return text
        if "${" in _REFERENCE.sub("", text):  # a "${" left over: one without its "}"
            raise SecretReferenceError("a reference ${ without its closing }: write $${ for a literal ${")
        return _REFERENCE.sub(self._substitute, text)

    def redact(self, text: str) -> str:
        """``text`` with every value resolved so far masked; values under 3 characters are no secret."""
        for value in sorted(self.resolved, key=len, reverse=True):
            if len(value) >= 3:
                text = text.replace(value, "***")
        return text

    def _substitute(self, match: re.Match[str]) -> str:
        reference = match.group(1)
        if reference is None:
            return "${"
        value = self._lookup(reference.strip())
        self.resolved.add(value)
        return value

    def _lookup(self, reference: str) -> str:
        kind, sep, rest = reference.partition(":")
        if sep and kind == "file":
            return _read(Path(rest), f"${{file:{rest}}}")
        if sep and kind == "credential":
            return self._credential(rest)
        if _VARIABLE.fullmatch(reference):
            return self._variable(reference)
        raise SecretReferenceError(
            f"bad reference ${{{reference}}}: expected ${{VAR}}, ${{file:/path}} or ${{credential:name}}"
        )

    def _variable(self, name: str) -> str:
        if name in self._env:
            return self._env[name]
        file_name = self._env.get(f"{name}_FILE")
        if file_name is not None:
            return _read(Path(file_name), f"{name}_FILE")
        raise SecretReferenceError(f"environment variable {name} is not set (nor {name}_FILE)")

    def _credential(self, name: str) -> str:
        if not _CREDENTIAL.fullmatch(name) or name in (".", ".."):
            raise SecretReferenceError(f"bad credential name {name!r}")
        directory = self._env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretReferenceError(
                f"${{credential:{name}}} needs CREDENTIALS_DIRECTORY (set by systemd LoadCredential=)"
            )
        return _read(Path(directory) / name, f"${{credential:{name}}}")


def _read(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretReferenceError(f"{what}: cannot read {path}: {reason}") from None
    return text.removesuffix("\n").removesuffix("\r")


def resolve_references(text: str, env: Mapping[str, str]) -> str:
    """``text`` with its secret references resolved against ``env``."""
    return SecretResolver(env).resolve(text)
