"""The metrics listener's endpoints: readiness with its reasons, the landing page, /healthz,
client-certificate TLS from the web config file and /metrics content negotiation."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from tests.conftest import daemon_config, running_daemon
from tests.prometheus_process import running_prometheus, scraping
from tests.waiting import exposition_until, wait_until
from virtmon import scheduler as scheduler_module
from virtmon.app import Daemon
from virtmon.collectors.snapshot import DomainRecord
from virtmon.ctl.client import ControlClient
from virtmon.exposition.cache import negotiate
from virtmon.exposition.render import CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT
from virtmon.virt.stats import SnapshotRequest, read_domains

TEST_URI = "test:///default"
# A remote test-driver URI whose socket does not exist: every connection attempt fails at once.
UNREACHABLE_URI = "test+unix:///default?socket=/nonexistent/virtmon-test/libvirt-sock"
NO_ADMIN = {"collectors": {"admin": False}}
# Long enough that no second cycle runs during a test: the data and the exposition stay put.
SLOW = {"interval": 30.0, **NO_ADMIN}


def base_url(daemon: Daemon) -> str:
    """The listener's address as a client on this host reaches it."""
    return daemon.metrics_address.replace("0.0.0.0", "127.0.0.1")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that leaves gzip bodies compressed (aiohttp decodes them by default)."""
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str, str]:
    """(status, content type header, body text) of one GET, uncompressed unless the caller's
    headers say otherwise (aiohttp offers gzip by default)."""
    kwargs["headers"] = {"Accept-Encoding": "identity", **kwargs.get("headers", {})}
    async with session.get(url, **kwargs) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


# -- /readyz ------------------------------------------------------------------------------------


async def test_readyz_is_200_ready_when_connected_and_fresh(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """Connected to libvirt with a fresh first cycle: /readyz answers 200 "ready"."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        status, _, body = await get(session, base_url(daemon) + "/readyz")
    assert (status, body) == (200, "ready\n")


async def test_readyz_is_503_naming_libvirt_while_it_cannot_connect(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """Unable to reach libvirt, the daemon runs and /readyz is 503 "libvirt not connected"."""
    cfg = daemon_config(short_tmp, libvirt={"uri": UNREACHABLE_URI}, collect=NO_ADMIN)
    async with running_daemon(cfg) as daemon:
        assert not daemon.supervisor.connected
        status, _, body = await get(session, base_url(daemon) + "/readyz")
        assert status == 503
        assert body.startswith("libvirt not connected (")
        assert body.rstrip("\n").removeprefix("libvirt not connected (").removesuffix(")") in {
            "connecting", "backoff"
        }
        status, _, _ = await get(session, base_url(daemon) + "/healthz")
        assert status == 200
        status, _, metrics = await get(session, base_url(daemon) + "/metrics")
        assert status == 200
        assert "libvirt_up 0" in metrics


async def test_readyz_is_503_naming_the_age_of_stale_data(
    short_tmp: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connected but the last good cycle is older than two intervals: 503 "data is N s old"."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        assert daemon.supervisor.connected
        url = base_url(daemon) + "/readyz"
        assert (await get(session, url))[0] == 200
        monkeypatch.setattr(daemon.scheduler.stats, "last_success", time.time() - 100.0)
        status, _, body = await get(session, url)
        assert status == 503
        assert body.startswith("data is ") and body.endswith(" s old\n")
        age = float(body.removeprefix("data is ").removesuffix(" s old\n"))
        assert 100.0 <= age < 130.0
        # Just inside two intervals is still ready.
        monkeypatch.setattr(daemon.scheduler.stats, "last_success", time.time() - 50.0)
        assert await get(session, url) == (200, "text/plain; charset=utf-8", "ready\n")


# -- landing page and /healthz ------------------------------------------------------------------


async def test_landing_page_is_html_linking_to_metrics_and_healthz_is_ok(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """/ answers 200 text/html with a link to /metrics; /healthz answers 200 "ok <time>"."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        status, content_type, body = await get(session, base_url(daemon) + "/")
        assert status == 200
        assert content_type.startswith("text/html")
        assert '<a href="/metrics">' in body
        before = time.time()
        status, _, health = await get(session, base_url(daemon) + "/healthz")
    assert status == 200
    word, stamp = health.split()
    assert word == "ok"
    assert abs(float(stamp) - before) < 5.0


async def test_a_scrape_before_the_first_cycle_gets_virtmons_own_metrics(
    short_tmp: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first cycle's libvirt call is still running, /metrics already answers with
    virtmon's own metrics (never an empty body), and with libvirt's once the cycle is done."""
    gate = threading.Event()

    def held_read(conn: Any, request: SnapshotRequest) -> tuple[DomainRecord, ...]:
        gate.wait(20)
        return read_domains(conn, request)

    monkeypatch.setattr(scheduler_module, "read_domains", held_read)
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    daemon = Daemon(cfg)
    task = asyncio.ensure_future(daemon.run())
    try:
        while not daemon.metrics_address:  # set once the listener is up
            assert not task.done(), "the daemon ended"
            await asyncio.sleep(0.05)
        url = base_url(daemon) + "/metrics"
        status, _, body = await get(session, url)
        assert not daemon.started.is_set()
        assert status == 200
        assert 'virtmon_build_info{version="' in body
        assert 'virtmon_libvirt_connection_state{state="connected"} 1' in body
        assert "libvirt_up" not in body  # nothing about libvirt is claimed before it is read
        gate.set()
        await asyncio.wait_for(daemon.started.wait(), 30)
        status, _, body = await get(session, url)
        assert (status, "libvirt_up 1" in body) == (200, True)
    finally:
        gate.set()
        daemon.stop()
        await asyncio.wait_for(task, 30)


# -- TLS with client certificates ---------------------------------------------------------------


def openssl(*args: str) -> None:
    """Run one openssl command quietly; CalledProcessError (with .stderr) if it fails."""
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA certificate and key as NAME.crt/NAME.key."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN=virtmon test {name}", "-keyout", str(key), "-out", str(crt))
    return crt, key


def make_leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> None:
    """NAME.crt/NAME.key signed by ``ca`` with these X.509 v3 extensions (one per line)."""
    key, csr, crt = (directory / f"{name}.{suffix}" for suffix in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    ext.write_text(extensions + "\nsubjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid,issuer\n")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(key), "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt))


@pytest.fixture
def mtls_files(tmp_path: Path) -> Path:
    """A CA; a server certificate for 127.0.0.1 and a client certificate it signed; a client
    certificate from another CA; and a web config requiring verified client certificates."""
    ca = make_ca(tmp_path, "ca")
    make_leaf(tmp_path, "server", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    make_leaf(tmp_path, "client", ca, "extendedKeyUsage=clientAuth")
    make_leaf(tmp_path, "stranger", make_ca(tmp_path, "other-ca"), "extendedKeyUsage=clientAuth")
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    return tmp_path


def client_context(directory: Path, certificate: str | None) -> ssl.SSLContext:
    """A client trusting the test CA for the server, presenting NAME.crt/NAME.key if given."""
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    if certificate is not None:
        context.load_cert_chain(directory / f"{certificate}.crt", directory / f"{certificate}.key")
    return context


async def test_client_certificates_are_required_and_verified(
    mtls_files: Path, short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """Only a client certificate from client_ca_file is served; none or another CA's is not."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI},
                        metrics={"web_config_file": str(mtls_files / "web.yml")}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        assert daemon.metrics_address.startswith("https://")
        url = base_url(daemon) + "/metrics"
        status, content_type, body = await get(
            session, url, ssl=client_context(mtls_files, "client")
        )
        assert (status, content_type) == (200, CONTENT_TYPE_TEXT)
        assert "libvirt_up 1" in body
        for refused in (None, "stranger"):
            # TLS 1.3 finishes the client's side of the handshake before the server checks the
            # certificate: the refusal shows on the first read, as a dropped connection.
            with pytest.raises(aiohttp.ClientConnectionError):
                await get(session, url, ssl=client_context(mtls_files, refused))
            # TLS 1.2 checks it inside the handshake: the connection itself fails.
            tls12 = client_context(mtls_files, refused)
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises(aiohttp.ClientConnectorError):
                await get(session, url, ssl=tls12)
        # The listener still serves the right client after refusing the others.
        status, _, _ = await get(session, url, ssl=client_context(mtls_files, "client"))
        assert status == 200


async def targets(url: str) -> dict[str, dict[str, Any]]:
    """Prometheus's active targets by job (empty until its API answers)."""
    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, \
                session.get(f"{url}/api/v1/targets") as response:
            body = await response.json()
            return {t["labels"]["job"]: t for t in body["data"]["activeTargets"]}
    return {}


async def test_refused_tls_handshakes_are_logged(
    mtls_files: Path, short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """A real Prometheus scraping without the client certificate the listener requires is
    refused in the handshake, and the daemon says so (it said nothing at all): a warning with
    the peer and OpenSSL's reason. Plain HTTP on the TLS port is one too; a connection that
    closes without a word (a port check) is not. Prometheus with the certificate scrapes."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI},
                        metrics={"web_config_file": str(mtls_files / "web.yml")}, collect=SLOW)
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(cfg) as daemon:
            target = base_url(daemon).removeprefix("https://")

            def refused() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "virtmon.metrics.tls_handshake_failed"]

            host, port = target.split(":")
            with socket.create_connection((host, int(port)), timeout=10):
                pass  # a port check: no warning
            with socket.create_connection((host, int(port)), timeout=10) as plain:
                plain.sendall(b"GET /metrics HTTP/1.1\r\nHost: virtmon\r\n\r\n")
                assert await asyncio.to_thread(plain.recv, 100) == b""  # dropped
            await wait_until(lambda: len(refused()) == 1)
            assert refused()[0]["reason"] == "HTTP_REQUEST"
            client = {"cert_file": str(mtls_files / "client.crt"),
                      "key_file": str(mtls_files / "client.key")}
            config = scraping([target], scrape_timeout="1s")
            config["scrape_configs"] = [
                {"job_name": job, "scheme": "https", "static_configs": [{"targets": [target]}],
                 "tls_config": {"ca_file": str(mtls_files / "ca.crt"), **cert}}
                for job, cert in [("with-certificate", client), ("without", {})]]
            async with running_prometheus(short_tmp, config) as url:
                async def scraped() -> bool:
                    found = await targets(url)
                    return (found.get("with-certificate", {}).get("health") == "up"
                            and found.get("without", {}).get("health") == "down")

                await wait_until_async(scraped, 60)
                without = (await targets(url))["without"]
        assert without["lastError"]  # "EOF": the refusal is the daemon's log's to explain
        from_prometheus = refused()[1:]
        assert from_prometheus and all(e["peer"].startswith("127.0.0.1:") for e in from_prometheus)
        assert {e["reason"] for e in from_prometheus} <= {"PEER_DID_NOT_RETURN_A_CERTIFICATE"}
        assert not [e for e in logs if e["log_level"] in ("error", "critical")]


async def wait_until_async(probe: Any, timeout: float) -> None:
    """Poll an async predicate every 0.2 s until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        await asyncio.sleep(0.2)


# -- content negotiation on /metrics ------------------------------------------------------------


async def test_accept_openmetrics_gives_the_openmetrics_body(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """Accept: application/openmetrics-text gets the OpenMetrics type and a "# EOF" body."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        url = base_url(daemon) + "/metrics"
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        status, content_type, body = await get(session, url, headers=headers)
        assert (status, content_type) == (200, CONTENT_TYPE_OPENMETRICS)
        assert body.endswith("# EOF\n")
        assert body.encode() == daemon.scheduler.exposition.openmetrics
        status, content_type, text = await get(session, url, headers={"Accept": "text/plain"})
        assert (status, content_type) == (200, CONTENT_TYPE_TEXT)
        assert "# EOF" not in text
        assert "libvirt_up 1" in text


async def test_accept_encoding_gzip_gives_the_same_text_compressed(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """Accept-Encoding: gzip gets a gzip body decompressing to the same cycle's plain body;
    the answer varies by both headers and says so."""
    cfg = daemon_config(short_tmp, libvirt={"uri": TEST_URI}, collect=SLOW)
    async with running_daemon(cfg) as daemon:
        url = base_url(daemon) + "/metrics"
        exposition = daemon.scheduler.exposition
        for accept in ("text/plain", "application/openmetrics-text"):
            async with session.get(url, headers={"Accept": accept,
                                                 "Accept-Encoding": "identity"}) as response:
                assert "Content-Encoding" not in response.headers
                plain = await response.read()
            async with session.get(url, headers={"Accept": accept,
                                                 "Accept-Encoding": "gzip"}) as response:
                assert response.headers["Content-Encoding"] == "gzip"
                assert response.headers["Vary"] == "Accept, Accept-Encoding"
                compressed = await response.read()
            assert daemon.scheduler.exposition is exposition  # no cycle ran in between
            assert compressed != plain
            assert gzip.decompress(compressed) == plain
            assert plain in (exposition.text, exposition.openmetrics)


@pytest.mark.parametrize(("accept", "encoding", "expected"), [
    ("application/openmetrics-text; version=1.0.0", "gzip, deflate", ("openmetrics", "gzip")),
    ("application/openmetrics-text;q=0, text/plain", "gzip;q=0, identity", ("text", None)),
    ("text/plain;q=0.5, application/openmetrics-text;q=0.9", "GZIP;q=0.1", ("openmetrics",
                                                                             "gzip")),
    ("", "", ("text", None)),
    ("application/openmetrics-text;q=bogus", "br", ("text", None)),
])
def test_choose_honours_quality_values(accept: str, encoding: str,
                                       expected: tuple[str, str | None]) -> None:
    """A format or encoding offered with q=0 (or a q that is not a number) is not chosen."""
    variant = negotiate(accept, encoding)
    assert ("openmetrics" if variant.openmetrics else "text",
            variant.content_encoding) == expected


async def test_event_counters_start_at_zero_for_every_kind(
    short_tmp: Path, session: aiohttp.ClientSession
) -> None:
    """virtmon_events_received_total has a 0 for every kind before its first event (each domain
    event id libvirt knows, connection, audit, admin), so the first one shows in increase();
    an audited call then counts 1."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        control={"allow_write": True})
    async with running_daemon(cfg) as daemon:
        _, _, body = await get(session, base_url(daemon) + "/metrics")
        kinds = {line.split('kind="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                 for line in body.splitlines()
                 if line.startswith("virtmon_events_received_total{")}
        assert {"lifecycle", "watchdog", "io_error", "connection", "audit", "admin"} <= set(kinds)
        assert len(kinds) >= 27 + 3 and kinds["watchdog"] == kinds["audit"] == 0
        client = ControlClient(str(short_tmp / "control.sock"))
        await asyncio.to_thread(client.call, "domain.set_autostart", domain="test",
                                autostart=False)
        await exposition_until(
            daemon.scheduler, lambda t: 'virtmon_events_received_total{kind="audit"} 1' in t)
