"""Who may hand mail to the SMTP intake: users with hashed passwords, trusted networks, recipient domains.

Password hashes are PHC strings (https://github.com/P-H-C/phc-string-format/blob/master/phc-sf-spec.md)
for scrypt, as :func:`hash_password` writes them::

    $scrypt$ln=14,r=8,p=5$<salt>$<hash>

``ln`` is log2 of scrypt's cost N; salt (16 random bytes) and hash (32 bytes) are base64 without
padding. The default cost is OWASP's scrypt equivalent N=2^14, r=8, p=5 (16 MiB, about 0.25 s here):
https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html#scrypt

Exceptions::

    AuthenticationFailed   unknown user or wrong password (the client cannot tell which)
    InvalidPasswordHash    a configured hash is not a string hash_password() writes
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping

import idna

SCHEME = "scrypt"
DEFAULT_LN = 14
DEFAULT_R = 8
DEFAULT_P = 5
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAX_MEM = 256 * 1024 * 1024
_PHC = re.compile(r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")
#: successful logins remembered per user, so a busy client does not pay scrypt on every connection
_CACHE_PER_USER = 8
#: scrypt checks running at once: a flood of AUTH attempts must not take every worker thread
_CONCURRENT_CHECKS = 2

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AuthenticationFailed(Exception):
    """Authentication credentials invalid."""


class InvalidPasswordHash(ValueError):
    """Expected a hash as `backchannel hash-password` prints it: $scrypt$ln=..,r=..,p=..$salt$hash."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, ln: int = DEFAULT_LN, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """A salted scrypt hash of ``password`` in PHC format, for the ``users`` of the SMTP intake."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password.encode("utf-8"), salt, ln, r, p)
    return f"${SCHEME}$ln={ln},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def _scrypt(password: bytes, salt: bytes, ln: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=2**ln, r=r, p=p, dklen=_HASH_BYTES, maxmem=_MAX_MEM)


class PasswordHash:
    """A parsed PHC scrypt string; checking a password costs what its parameters say."""

    def __init__(self, text: str) -> None:
        match = _PHC.fullmatch(text.strip())
        if match is None:
            raise InvalidPasswordHash(InvalidPasswordHash.__doc__)
        ln, r, p = (int(g) for g in match.group(1, 2, 3))
        if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16) or 128 * r * 2**ln > _MAX_MEM // 2:
            raise InvalidPasswordHash("scrypt parameters out of range (ln 1-20, r 1-32, p 1-16, <= 128 MiB)")
        self.params = (ln, r, p)
        try:
            self._salt, self._digest = _unb64(match.group(4)), _unb64(match.group(5))
        except ValueError as exc:
            raise InvalidPasswordHash("salt or hash is not valid base64") from exc

    def matches(self, password: bytes) -> bool:
        """Constant-time comparison of the derived key (blocking: call it in a thread)."""
        candidate = _scrypt(password, self._salt, *self.params)
        return hmac.compare_digest(candidate, self._digest)


def _dummy(hashes: Iterable[PasswordHash]) -> PasswordHash:
    """What an unknown name is checked against, so the time taken does not reveal which names
    exist: a hash at the users' cost (the most common one; the default with no users)."""
    costs = Counter(h.params for h in hashes).most_common(1)
    ln, r, p = costs[0][0] if costs else (DEFAULT_LN, DEFAULT_R, DEFAULT_P)
    return PasswordHash(f"$scrypt$ln={ln},r={r},p={p}${_b64(bytes(16))}${_b64(bytes(32))}")


class Credentials:
    """The configured users. scrypt runs in a worker thread: it must not stall the event loop."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._hashes = {name: PasswordHash(text) for name, text in users.items()}
        #: checked for an unknown name
        self.dummy = _dummy(self._hashes.values())
        self._cache_key = secrets.token_bytes(32)
        self._cache: dict[str, list[bytes]] = {}
        self._checks = asyncio.Semaphore(_CONCURRENT_CHECKS)

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def __contains__(self, name: object) -> bool:
        return name in self._hashes

    async def authenticate(self, login: bytes, password: bytes) -> str:
        """The user's name; raises AuthenticationFailed for an unknown user or a wrong password."""
        name = login.decode("utf-8", errors="replace")
        stored = self._hashes.get(name)
        token = hmac.new(self._cache_key, login + b"\0" + password, hashlib.sha256).digest()
        if stored is not None and any(hmac.compare_digest(token, t) for t in self._cache.get(name, ())):
            return name
        async with self._checks:
            ok = await asyncio.to_thread((stored or self.dummy).matches, password)
        if stored is None or not ok:
            raise AuthenticationFailed(AuthenticationFailed.__doc__)
        remembered = self._cache.setdefault(name, [])
        remembered[:] = [token, *remembered[: _CACHE_PER_USER - 1]]
        return name


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    # A dual-stack listener on "::" sees IPv4 clients as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Networks:
    """Client addresses trusted to send without authenticating (a CIDR list)."""

    def __init__(self, networks: Iterable[IpNetwork]) -> None:
        self._networks = tuple(networks)

    def __contains__(self, host: object) -> bool:
        address = _ip(host) if isinstance(host, str) else None
        return address is not None and any(address in net for net in self._networks)


def is_loopback(host: str) -> bool:
    address = _ip(host)
    return address is not None and address.is_loopback


def normalise_domain(domain: str) -> str:
    """Lower case, no trailing dot, internationalised names in their ASCII (punycode) form, by
    IDNA 2008 with UTS 46 as mail providers resolve them (``straße.example`` is
    ``xn--strae-oqa.example``; Python's IDNA 2003 codec folds it into ``strasse.example``, another
    domain); a ``*.`` prefix kept; a name IDNA refuses compared as written, in lower case."""
    text = domain.strip().rstrip(".").lower()
    if text.startswith("*."):
        return "*." + normalise_domain(text[2:])
    try:
        return idna.encode(text, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return text


class RecipientDomains:
    """Domains the intake accepts recipients in; ``*.example.com`` covers subdomains. Empty: any."""

    def __init__(self, domains: Iterable[str]) -> None:
        names = [normalise_domain(d) for d in domains]
        self._exact = frozenset(n for n in names if not n.startswith("*."))
        self._suffixes = tuple(n[1:] for n in names if n.startswith("*."))

    def allows(self, address: str) -> bool:
        if not self._exact and not self._suffixes:
            return True
        _, at, domain = address.rpartition("@")
        name = normalise_domain(domain) if at else ""
        return name in self._exact or (bool(name) and name.endswith(self._suffixes))
