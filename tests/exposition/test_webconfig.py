"""TLS and basic auth on /metrics from an exporter-toolkit web config file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
import subprocess
from pathlib import Path
from unittest import mock

import aiohttp
import bcrypt
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import daemon_config, running_daemon
from virtmon import config as config_module
from virtmon import configfile
from virtmon.exposition.webconfig import (
    WebConfigError,
    basic_auth_middleware,
    dummy_hash,
    load_web_config,
)
from virtmon.reload import reload_daemon


def make_certificate(directory: Path) -> bytes:
    """A self-signed certificate and key for 127.0.0.1 as tls.crt/tls.key; its DER bytes."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.crt")],
        check=True, capture_output=True,
    )
    return ssl.PEM_cert_to_DER_cert((directory / "tls.crt").read_text())


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    """A self-signed certificate and key for 127.0.0.1 in tmp_path."""
    make_certificate(tmp_path)
    return tmp_path


def web_daemon_config(short_tmp: Path, web_config: Path) -> config_module.Config:
    """A daemon on the test driver with this web config file on its metrics listener."""
    return daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                         metrics={"web_config_file": str(web_config)},
                         collect={"collectors": {"admin": False}})


def trusting_anything() -> ssl.SSLContext:
    """A client context that accepts any certificate (the tests compare certificates)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def served_certificate(port: int) -> bytes:
    """The certificate the listener presents to a client sending no server name (as by IP)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            trusting_anything().wrap_socket(raw) as tls:
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def basic(user: str, password: str) -> str:
    """An Authorization header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_web_config(directory: Path, password: str) -> Path:
    """A web config with TLS and one bcrypt user ("prometheus")."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=8)).decode()
    path = directory / "web.yml"
    path.write_text(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    return path


def sha256_hex(der: bytes) -> str:
    """A certificate's fingerprint as the logs show it: AB:CD:..."""
    return hashlib.sha256(der).digest().hex(":").upper()


def test_certificate_problems_name_the_file(tmp_path: Path) -> None:
    """A certificate or key that cannot be read or loaded is reported with its key and its
    path (and which certificate goes with which key), not as a bare OpenSSL error."""
    make_certificate(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    make_certificate(other)
    path = tmp_path / "web.yml"
    cases = {
        ("missing.crt", "tls.key"): f"tls_server_config.cert_file: cannot read "
                                    f"{tmp_path / 'missing.crt'}: No such file or directory",
        ("tls.crt", "tls.crt"): f"tls_server_config.key_file: {tmp_path / 'tls.crt'} holds no "
                                "PEM private key",
        ("tls.key", "tls.key"): f"tls_server_config.cert_file: {tmp_path / 'tls.key'} holds no "
                                "PEM certificate",
        ("tls.crt", "other/tls.key"): f"tls_server_config.cert_file: cannot load the "
                                      f"certificate {tmp_path / 'tls.crt'} with the key "
                                      f"{other / 'tls.key'} (key_file): KEY_VALUES_MISMATCH",
    }
    for (cert, key), expected in cases.items():
        path.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
        with pytest.raises(WebConfigError) as caught:
            load_web_config(path)
        assert caught.value.problems == [expected]
    path.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
                    "  client_ca_file: nowhere.crt\n"
                    "  client_auth_type: RequireAndVerifyClientCert\n")
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert caught.value.problems == [f"tls_server_config.client_ca_file: cannot load "
                                     f"{tmp_path / 'nowhere.crt'}: No such file or directory"]


def test_every_web_config_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    """Unknown keys, a missing key file, a bad client auth type and a non-bcrypt hash all show."""
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n  cert_file: a.crt\n  client_auth_type: Sometimes\n  bogus: 1\n"
        "basic_auth_users:\n  alice: plaintext\n"
        "extra: 1\n"
    )
    with pytest.raises(config_module.ConfigError) as caught:
        configfile.build({"metrics": {"web_config_file": str(path)}})
    text = "\n".join(caught.value.problems)
    for expected in ("metrics.web_config_file: extra: unknown key",
                     "tls_server_config.bogus: unknown key",
                     "tls_server_config.key_file: required",
                     "tls_server_config.client_auth_type: 'Sometimes'",
                     "basic_auth_users.alice: must be a bcrypt hash"):
        assert expected in text


async def test_tls_and_basic_auth_guard_metrics(tls_files: Path, short_tmp: Path) -> None:
    """Over TLS: no credentials 401, a wrong password 401, the right one 200 with metrics."""
    web_config = write_web_config(tls_files, "s3cret")
    cfg = web_daemon_config(short_tmp, web_config)
    context = ssl.create_default_context(cafile=str(tls_files / "tls.crt"))
    async with running_daemon(cfg) as daemon:
        assert daemon.metrics_address.startswith("https://")
        url = daemon.metrics_address.replace("0.0.0.0", "127.0.0.1") + "/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=context) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Basic")
            wrong = {"Authorization": basic("prometheus", "guess")}
            async with session.get(url, ssl=context, headers=wrong) as response:
                assert response.status == 401
            right = {"Authorization": basic("prometheus", "s3cret")}
            async with session.get(url, ssl=context, headers=right) as response:
                assert response.status == 200
                assert "libvirt_up 1" in await response.text()
            # The verified pair is remembered: the next scrape skips bcrypt.
            checks: list[bytes] = []
            checkpw = bcrypt.checkpw

            def counted_checkpw(password: bytes, hashed: bytes) -> bool:
                checks.append(password)
                return checkpw(password, hashed)

            with mock.patch.object(bcrypt, "checkpw", counted_checkpw):
                async with session.get(url, ssl=context, headers=right) as response:
                    assert response.status == 200
                async with session.get(url, ssl=context, headers=wrong) as response:
                    assert response.status == 401
            assert checks == [b"guess"]  # only the pair not verified before was checked


async def test_a_reload_renews_the_certificate_and_the_users(
    tls_files: Path, short_tmp: Path
) -> None:
    """SIGHUP after the files were replaced: the next handshake has the new certificate, the
    new password works and the old one no longer does; TLS off waits for a restart."""
    first = ssl.PEM_cert_to_DER_cert((tls_files / "tls.crt").read_text())
    web_config = write_web_config(tls_files, "s3cret")
    cfg = web_daemon_config(short_tmp, web_config)
    insecure = trusting_anything()
    async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
        url = daemon.metrics_address.replace("0.0.0.0", "127.0.0.1") + "/metrics"
        port = int(url.split(":")[2].split("/")[0])

        async def status(password: str) -> int:
            headers = {"Authorization": basic("prometheus", password)}
            async with session.get(url, ssl=insecure, headers=headers) as response:
                return response.status

        assert await asyncio.to_thread(served_certificate, port) == first
        renewed_dir = tls_files / "renewed"
        renewed_dir.mkdir()
        second = make_certificate(renewed_dir)
        for name in ("tls.crt", "tls.key"):  # renewed in place, as certbot or an operator does
            (renewed_dir / name).replace(tls_files / name)
        write_web_config(tls_files, "n3w")
        assert await asyncio.to_thread(served_certificate, port) == first  # not before reload
        with structlog.testing.capture_logs() as logs:
            result = await reload_daemon(daemon, lambda: cfg)
            assert result is not None and result.restart == ()
            assert await reload_daemon(daemon, lambda: cfg) is not None  # nothing new
        assert await asyncio.to_thread(served_certificate, port) == second
        # The reload says which certificate it serves, and whether it is a new one.
        assert [(e["cert_file"], e["fingerprint"], e["changed"]) for e in logs
                if e["event"] == "virtmon.reload.certificate"] == [
            (str(tls_files / "tls.crt"), sha256_hex(second), True),
            (str(tls_files / "tls.crt"), sha256_hex(second), False)]
        assert await status("n3w") == 200
        assert await status("s3cret") == 401

        web_config.write_text("basic_auth_users: {}\n")  # TLS off: the listener must change
        result = await reload_daemon(daemon, lambda: cfg)
        assert result is not None and result.restart == ("metrics.web_config_file (TLS)",)
        assert await asyncio.to_thread(served_certificate, port) == second
        assert await status("n3w") == 200


async def test_a_reload_that_changes_handshake_rules_waits_for_a_restart(
    tls_files: Path, short_tmp: Path
) -> None:
    """Requiring client certificates (or another lowest TLS version) cannot be swapped in per
    connection: the reload says a restart is needed and keeps serving as before."""
    web_config = tls_files / "web.yml"
    web_config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    cfg = web_daemon_config(short_tmp, web_config)
    insecure = trusting_anything()
    async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
        url = daemon.metrics_address.replace("0.0.0.0", "127.0.0.1") + "/metrics"
        for extra in ("  client_ca_file: tls.crt\n  client_auth_type: RequireAndVerifyClientCert\n",
                      "  min_version: TLS13\n"):
            web_config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
                                  + extra)
            result = await reload_daemon(daemon, lambda: cfg)
            assert result is not None
            assert result.restart == ("metrics.web_config_file (TLS)",), extra
            async with session.get(url, ssl=insecure) as response:
                assert response.status == 200  # as before: nothing half-applied


async def test_an_unknown_user_is_checked_by_bcrypt_as_a_known_one_is() -> None:
    """A user name that does not exist goes through bcrypt too (against a dummy hash of the
    users' cost): a 401 takes as long for an unknown user as for a wrong password, so its time
    does not tell which names exist."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5))
    app = web.Application(middlewares=[basic_auth_middleware({"prometheus": hashed})])
    app.router.add_get("/metrics", ok)
    checks: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counted_checkpw(password: bytes, hashed: bytes) -> bool:
        checks.append(hashed)
        return checkpw(password, hashed)

    async with TestClient(TestServer(app)) as client:
        with mock.patch.object(bcrypt, "checkpw", counted_checkpw):
            for user in ("root", "prometheus"):
                response = await client.get("/metrics", headers={"Authorization":
                                                                 basic(user, "guess")})
                assert response.status == 401
    assert checks == [dummy_hash(5), hashed]
    assert dummy_hash(5).startswith(b"$2b$05$") and dummy_hash(5) != hashed


async def ok(_request: web.Request) -> web.Response:
    """A 200 for the test routes."""
    return web.Response(text="ok")
