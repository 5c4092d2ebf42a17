"""Debian's Prometheus as a process of a test's own: on loopback, with the test's configuration,
its log in the test's directory, stopped by its pid afterwards (plain functions, no fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.daemon import free_port
from tests.tools import need


def start(directory: Path, config_path: Path, port: int,
          admin_api: bool) -> subprocess.Popen[bytes]:
    """Start the process (blocking: a fork and exec), its output into prometheus.log."""
    with (directory / "prometheus.log").open("wb") as log:
        return subprocess.Popen(
            [need("prometheus"), f"--config.file={config_path}",
             f"--storage.tsdb.path={directory / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
             *(["--web.enable-admin-api"] if admin_api else [])],
            stdout=log, stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def running_prometheus(directory: Path, config: dict[str, Any],
                             admin_api: bool = False) -> AsyncIterator[str]:
    """Prometheus with ``config`` (prometheus.yml as a mapping) for the body of a ``with``,
    ready to answer; yields its URL. Its log is ``directory/prometheus.log``."""
    port = free_port()
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = directory / "prometheus.log"
    proc = await asyncio.to_thread(start, directory, config_path, port, admin_api)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as session, \
                        session.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        break
            assert time.monotonic() < deadline, "prometheus did not become ready in 30 s"
            await asyncio.sleep(0.2)
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)


def scraping(targets: list[str], job: str = "virtmon", rules: Path | None = None,
             **global_: str) -> dict[str, Any]:
    """A configuration: ``job`` scraping ``targets`` every second, ``rules`` evaluated every
    second; ``global_`` adds global settings (``scrape_timeout="900ms"``)."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", **global_},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }
    if rules is not None:
        config["rule_files"] = [str(rules)]
    return config
