"""TLS and basic auth for /metrics, from a web config file in the exporter-toolkit format.

```yaml
tls_server_config:
  cert_file: /etc/virtmon/tls.crt
  key_file: /etc/virtmon/tls.key
  client_ca_file: /etc/virtmon/ca.crt        # optional
  client_auth_type: RequireAndVerifyClientCert # optional, as in the toolkit
basic_auth_users:
  prometheus: $2y$10$...                     # bcrypt hash
```

bcrypt is deliberately slow (tens of ms per check at cost 10): it runs in a worker thread, and a
verified (user, password) pair is remembered by its SHA-256 digest (at most ``MAX_REMEMBERED``),
so a scraper pays the bcrypt cost once, not per scrape.

YAML and bcrypt are imported when a web config file is read and when a password is checked:
a daemon without a web config file loads neither.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from virtmon.component import Restart

log = structlog.get_logger("virtmon.exposition.webconfig").bind(component="metrics")

MAX_REMEMBERED = 1024

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


class WebConfigError(Exception):
    """Every problem in a web config file, each with its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class WebConfig:
    """The parsed file: an SSL context (or None) and the basic-auth users (name → bcrypt hash).

    ``cert_file`` and ``fingerprint`` (SHA-256 of the certificate) say which certificate the
    context serves, for the logs of the start and of a reload.
    """

    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    cert_file: str = ""
    fingerprint: str = ""


PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def _read(key: str, path: Path, problems: list[str]) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as exc:
        problems.append(f"tls_server_config.{key}: cannot read {path}: "
                        f"{exc.strerror or exc}")
        return None


def fingerprint(pem: bytes) -> str:
    """The SHA-256 fingerprint of the first certificate of a PEM file, as hex pairs."""
    start = pem.index(PEM_CERTIFICATE)
    end = pem.index(b"-----END CERTIFICATE-----", start) + len(b"-----END CERTIFICATE-----")
    der = ssl.PEM_cert_to_DER_cert(pem[start:end].decode("ascii"))
    return hashlib.sha256(der).digest().hex(":").upper()


def _tls(raw: Any, base: Path, problems: list[str]) -> tuple[ssl.SSLContext, str, str] | None:
    """The SSL context, the certificate's path and its fingerprint (None after a problem; every
    problem names its key and, for a file, the file)."""
    if not isinstance(raw, dict):
        problems.append("tls_server_config: must be a mapping")
        return None
    for key in sorted(set(raw) - TLS_KEYS):
        problems.append(f"tls_server_config.{key}: unknown key")
    for key in ("cert_file", "key_file"):
        if key not in raw:
            problems.append(f"tls_server_config.{key}: required")
    auth = raw.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH_TYPES:
        problems.append(f"tls_server_config.client_auth_type: {auth!r} is not one of "
                        f"{', '.join(CLIENT_AUTH_TYPES)}")
    version = raw.get("min_version", "TLS12")
    if version not in TLS_VERSIONS:
        problems.append("tls_server_config.min_version: must be TLS12 or TLS13")
    if problems:
        return None
    cert, key = base / raw["cert_file"], base / raw["key_file"]
    cert_pem, key_pem = _read("cert_file", cert, problems), _read("key_file", key, problems)
    if cert_pem is None or key_pem is None:
        return None
    if PEM_CERTIFICATE not in cert_pem:
        problems.append(f"tls_server_config.cert_file: {cert} holds no PEM certificate")
    if b"PRIVATE KEY-----" not in key_pem:
        problems.append(f"tls_server_config.key_file: {key} holds no PEM private key")
    if problems:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSIONS[version]
    try:
        context.load_cert_chain(cert, key)
        served = fingerprint(cert_pem)
    except (OSError, ValueError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        problems.append(f"tls_server_config.cert_file: cannot load the certificate {cert} with "
                        f"the key {key} (key_file): {reason}")
        return None
    context.verify_mode = CLIENT_AUTH_TYPES[auth]
    if "client_ca_file" in raw:
        ca = base / raw["client_ca_file"]
        try:
            context.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            problems.append(f"tls_server_config.client_ca_file: cannot load {ca}: {reason}")
    elif context.verify_mode != ssl.CERT_NONE:
        problems.append("tls_server_config.client_ca_file: required for client certificates")
    return context, str(cert), served


def load_web_config(path: Path) -> WebConfig:
    """Read and validate a web config file; raise WebConfigError with every problem."""
    import yaml  # here: only a daemon with a web config file needs it

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise WebConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise WebConfigError([f"{path}: not valid YAML: {exc}"]) from None
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise WebConfigError([f"{path}: must be a mapping"])
    for key in sorted(set(raw) - {"tls_server_config", "basic_auth_users"}):
        problems.append(f"{key}: unknown key")
    tls = None
    if "tls_server_config" in raw:
        tls = _tls(raw["tls_server_config"], path.parent, problems)
    users: dict[str, bytes] = {}
    for name, hashed in (raw.get("basic_auth_users") or {}).items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            problems.append(f"basic_auth_users.{name}: must be a bcrypt hash")
        else:
            users[str(name)] = hashed.encode()
    if problems:
        raise WebConfigError(problems)
    if users:
        dummy_hash(_cost(users))  # made now, not during the first unknown user's check
    if tls is None:
        return WebConfig(None, users)
    return WebConfig(tls[0], users, tls[1], tls[2])


class LiveWebConfig:
    """The web config the metrics listener runs with; a reload replaces it in place.

    The listener is bound once, with ``ssl_context``. OpenSSL calls that context's SNI callback
    on every handshake (with or without a server name), and the callback hands the connection
    the newest context: renewed certificates apply from the next connection, and connections
    already open keep theirs. ``users`` is the dict the basic-auth middleware reads per request.
    Turning TLS on or off, or changing what a handshake requires (client certificates, the
    lowest TLS version), needs a restart: see :meth:`can_take`.
    """

    def __init__(self, loaded: WebConfig) -> None:
        self.users: dict[str, bytes] = dict(loaded.users)
        self.ssl_context = loaded.ssl_context
        self._newest = loaded.ssl_context
        self.fingerprint = loaded.fingerprint  # of the certificate served now
        if self.ssl_context is not None:
            self.ssl_context.sni_callback = self._hand_newest

    def _hand_newest(self, connection: Any, _server_name: str | None,
                     context: ssl.SSLContext) -> None:
        if self._newest is not None and self._newest is not context:
            connection.context = self._newest

    def can_take(self, loaded: WebConfig) -> bool:
        """Whether ``loaded`` applies without a restart.

        TLS must stay on or stay off, and the handshake's rules stay those of the listener's
        context: swapping a connection's context in the SNI callback changes its certificate
        and client CAs, but not whether a client certificate is required nor the lowest TLS
        version, so a change of either waits for a restart.
        """
        new, bound = loaded.ssl_context, self.ssl_context
        if new is None or bound is None:
            return new is None and bound is None
        return (new.verify_mode == bound.verify_mode
                and new.minimum_version == bound.minimum_version)

    def renew(self, loaded: WebConfig) -> Restart:
        """Serve with a web config a reload read again, if it applies without a restart (see
        :meth:`can_take`); else keep the running one and answer that it waits for one."""
        if not self.can_take(loaded):
            return ("metrics.web_config_file (TLS)",)
        before = self.fingerprint
        self.replace(loaded)
        if loaded.ssl_context is not None:
            # Said either way: an operator who renewed a certificate sees it taken or not.
            log.info("virtmon.reload.certificate", cert_file=loaded.cert_file,
                     fingerprint=loaded.fingerprint, changed=loaded.fingerprint != before)
        return ()

    def replace(self, loaded: WebConfig) -> None:
        """Serve with ``loaded`` from the next request and handshake (on the loop)."""
        if not self.can_take(loaded):
            raise ValueError("turning TLS on or off, or changing client certificate or TLS "
                             "version rules, needs a restart")
        self.users.clear()
        self.users.update(loaded.users)
        self._newest = loaded.ssl_context
        self.fingerprint = loaded.fingerprint


# Dummy hashes by bcrypt cost, made once per cost: an unknown user is checked against one.
_DUMMY_HASHES: dict[int, bytes] = {}
_DUMMY_LOCK = threading.Lock()


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # here: only a daemon with users checks passwords

    # Go's bcrypt writes $2y$; the Python library checks the identical $2b$ variant.
    return bool(bcrypt.checkpw(password, hashed.replace(b"$2y$", b"$2b$", 1)))


def _cost(users: Mapping[str, bytes]) -> int:
    """The users' bcrypt cost (the highest, should they differ): ``$2y$10$...`` is 10."""
    costs = [int(h[4:6]) for h in users.values() if h[4:6].isdigit()]
    return max(costs, default=10)


def dummy_hash(cost: int) -> bytes:
    """A bcrypt hash of ``cost`` that no password of any user is checked against."""
    import bcrypt  # here: only a daemon with users makes one

    with _DUMMY_LOCK:
        if cost not in _DUMMY_HASHES:
            _DUMMY_HASHES[cost] = bcrypt.hashpw(b"virtmon: no such user",
                                                bcrypt.gensalt(rounds=cost))
        return _DUMMY_HASHES[cost]


def _check_unknown(password: bytes, cost: int) -> None:
    _checkpw(password, dummy_hash(cost))


def basic_auth_middleware(users: Mapping[str, bytes]) -> Middleware:
    """Require one of ``users`` on every request (no users: the middleware lets all pass).

    ``users`` is read per request, so a caller may change it in place (a reload).
    """
    verified: set[bytes] = set()
    # bcrypt's own threads: a flood of bad passwords must not take the threads that journal
    # events and run collection cycles.
    bcrypt_limiter = anyio.CapacityLimiter(2)

    async def check(header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep or not users:
            return False
        hashed = users.get(user)
        if hashed is None:
            # An unknown user costs what a known one does (a bcrypt check against a dummy hash
            # of the users' cost), so the time of a 401 does not tell which names exist.
            await anyio.to_thread.run_sync(_check_unknown, password.encode(), _cost(users),
                                           limiter=bcrypt_limiter)
            return False
        digest = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()
        if digest in verified:
            return True
        ok = await anyio.to_thread.run_sync(_checkpw, password.encode(), hashed,
                                            limiter=bcrypt_limiter)
        if ok:
            if len(verified) >= MAX_REMEMBERED:
                verified.clear()
            verified.add(digest)
        return bool(ok)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if users and not await check(request.headers.get("Authorization", "")):
            return web.Response(status=401, text="Unauthorized\n",
                                headers={"WWW-Authenticate": 'Basic realm="virtmon"'})
        return await handler(request)

    return middleware
