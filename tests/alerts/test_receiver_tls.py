"""Receivers over HTTPS: tls_ca_file, a client certificate and extra headers, end to end.

A throwaway PKI is made with ``openssl`` (a CA, a server certificate for 127.0.0.1 and a client
certificate it signed, plus an unrelated second CA); the receiver is an aiohttp HTTPS server
that requires and verifies client certificates, and the alert comes from a running daemon.

asyncio's TLS server drops a connection whose handshake it rejects without flushing its TLS
alert, so a client refused for lacking a certificate sees only "Connection reset by peer";
one test therefore uses ``openssl s_server``, which sends the alert, to check that the outbox
error then names it.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.alerts.control_env import Env, alert_daemon, domains_at, receiver
from tests.alerts.receiver import Recorder, serving
from virtmon.alerts import formats

CLIENT_CN = "virtmon-client"
HEADERS = {"X-Tenant": "blue", "Authorization": "Bearer t0k"}

REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    """Paths of the generated certificates and keys."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                   timeout=30)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    _openssl(directory, "req", "-x509", "-new", "-config", "openssl.cnf", "-extensions", "ca",
             "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/CN={name}", "-days", "2", "-keyout", f"{name}.key",
             "-out", f"{name}.pem")
    return directory / f"{name}.pem", directory / f"{name}.key"


def _leaf(directory: Path, name: str, cn: str, profile: str, ca: tuple[Path, Path]
          ) -> tuple[Path, Path]:
    """A certificate of ``profile`` (server/client) signed by ``ca``: (certificate, key)."""
    _openssl(directory, "req", "-new", "-config", "openssl.cnf", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr")
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]),
             "-CAkey", str(ca[1]), "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "2",
             "-extfile", "openssl.cnf", "-extensions", profile, "-out", f"{name}.pem")
    return directory / f"{name}.pem", directory / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, plus a second CA."""
    directory = tmp_path_factory.mktemp("pki")
    (directory / "openssl.cnf").write_text(REQ_CONFIG)
    ca = _ca(directory, "ca")
    server = _leaf(directory, "server", "127.0.0.1", "server", ca)
    client = _leaf(directory, "client", CLIENT_CN, "client", ca)
    other, _ = _ca(directory, "other-ca")
    return Pki(ca[0], server[0], server[1], client[0], client[1], other)


def server_context(pki: Pki) -> ssl.SSLContext:
    """The receiver's TLS: its certificate, and client certificates required, checked by the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class TlsRecorder(Recorder):
    """A Recorder that also notes, per request, the scheme and the client certificate's CN."""

    peers: list[str | None] = field(default_factory=list)
    schemes: list[str] = field(default_factory=list)
    hellos: int = 0  # TLS ClientHellos the server received (its SNI callback ran)

    def watch(self, context: ssl.SSLContext) -> ssl.SSLContext:
        """Count the handshakes ``context`` begins (SNI callback: once per ClientHello)."""
        def hello(_sock: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
            self.hellos += 1
        context.sni_callback = hello
        return context

    async def handle(self, request: web.Request) -> web.Response:
        """Note the peer certificate's subject CN, then record as Recorder does."""
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(rdn[0] for rdn in cert["subject"]) if cert else {}
        self.peers.append(subject.get("commonName"))
        self.schemes.append(request.scheme)
        return await super().handle(request)


async def outbox_rows(env: Env, until: Callable[[list[dict[str, Any]]], bool],
                      timeout: float = 15.0) -> list[dict[str, Any]]:
    """The pending rows of receiver ``hook`` once ``until(rows)`` holds (control API)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = list((await env.call("alerts.outbox", receiver="hook"))["rows"])
        if until(rows):
            return rows
        assert time.monotonic() < deadline, f"outbox never matched in {timeout} s: {rows}"
        await asyncio.sleep(0.05)


async def test_alert_arrives_over_mutual_tls_with_headers(pki: Pki, short_tmp: Path) -> None:
    """With tls_ca_file, a client certificate and headers, the alert arrives over verified mTLS
    carrying the client's CN, both extra headers and the Idempotency-Key."""
    rec = TlsRecorder()
    async with serving(rec, ssl_context=rec.watch(server_context(pki))):
        hook = receiver("hook", rec.url, tls_ca_file=str(pki.ca),
                        tls_cert_file=str(pki.client_cert), tls_key_file=str(pki.client_key),
                        headers=dict(HEADERS))
        async with alert_daemon(short_tmp, [hook]) as env:
            env.crash("web-1")
            await rec.wait_for(lambda: bool(rec.requests), timeout=15)
            await outbox_rows(env, lambda rows: rows == [])  # marked delivered
            [request] = rec.requests
            assert rec.schemes == ["https"] and rec.peers == [CLIENT_CN]
            assert domains_at(rec) == ["web-1"]
            for name, value in HEADERS.items():
                assert request.headers.get(name) == value, (name, request.headers)
            [alert] = request.json()["alerts"]
            assert request.headers[formats.IDEMPOTENCY_HEADER] == alert["key"] != ""
            assert request.headers["Content-Type"] == "application/json"


async def test_missing_client_certificate_fails_handshake_row_stays_pending(
        pki: Pki, short_tmp: Path) -> None:
    """Without a client certificate the mTLS handshake fails: nothing reaches the receiver and
    the row stays pending, retried, with a TLS/SSL error."""
    rec = TlsRecorder()
    async with serving(rec, ssl_context=rec.watch(server_context(pki))):
        hook = receiver("hook", rec.url, tls_ca_file=str(pki.ca), headers=dict(HEADERS))
        async with alert_daemon(short_tmp, [hook]) as env:
            env.crash("web-1")
            assert (await env.alert("web-1", "firing"))["rule"] == "Crash"
            [row] = await outbox_rows(env, lambda rows: bool(rows) and rows[0]["attempts"] >= 2)
            assert row["state"] == "pending" and row["url"] == rec.url
            error = row["last_error"] or ""
            # The server's alert is not flushed (module docstring): a TLS error or a reset.
            assert any(word in error.upper() for word in ("SSL", "TLS")) \
                or "Connection reset by peer" in error, error
            assert rec.hellos >= 2  # each attempt reached the handshake, none got further
            assert rec.requests == [] and rec.peers == []


async def test_untrusted_server_certificate_fails_verification_row_stays_pending(
        pki: Pki, short_tmp: Path) -> None:
    """With a tls_ca_file that did not sign the server's certificate, verification fails:
    nothing reaches the receiver and the row stays pending with a certificate error."""
    rec = TlsRecorder()
    async with serving(rec, ssl_context=rec.watch(server_context(pki))):
        hook = receiver("hook", rec.url, tls_ca_file=str(pki.other_ca),
                        tls_cert_file=str(pki.client_cert), tls_key_file=str(pki.client_key))
        async with alert_daemon(short_tmp, [hook]) as env:
            env.crash("web-1")
            [row] = await outbox_rows(env, lambda rows: bool(rows) and rows[0]["attempts"] >= 2)
            assert row["state"] == "pending" and row["url"] == rec.url
            error = row["last_error"] or ""
            assert "certificate verify failed" in error.lower(), error
            assert rec.hellos >= 2 and rec.requests == [] and rec.peers == []


@asynccontextmanager
async def s_server(pki: Pki, directory: Path) -> AsyncIterator[str]:
    """``openssl s_server`` requiring a client certificate of the CA; yields its https URL."""
    out = directory / "s_server.out"
    with out.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            "openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", str(pki.server_cert),
            "-key", str(pki.server_key), "-CAfile", str(pki.ca), "-Verify", "1",
            "-verify_return_error", "-www",
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (accept := [line for line in out.read_text().splitlines()
                              if line.startswith("ACCEPT ")]):
            assert process.returncode is None, "openssl s_server exited"
            assert time.monotonic() < deadline, "openssl s_server did not listen in 10 s"
            await asyncio.sleep(0.02)
        yield f"https://{accept[0].split()[1]}/hook"
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_rejected_client_certificate_error_names_tls(pki: Pki, short_tmp: Path) -> None:
    """Against a server that sends its TLS alert, the outbox error of a receiver without a
    client certificate names the TLS failure, and the row stays pending."""
    async with s_server(pki, short_tmp) as url:
        hook = receiver("hook", url, tls_ca_file=str(pki.ca), headers=dict(HEADERS))
        async with alert_daemon(short_tmp, [hook]) as env:
            env.crash("web-1")
            [row] = await outbox_rows(env, lambda rows: bool(rows) and rows[0]["attempts"] >= 1)
            assert row["state"] == "pending" and row["url"] == url
            error = row["last_error"] or ""
            assert "SSL" in error.upper() and "ALERT" in error.upper(), error
