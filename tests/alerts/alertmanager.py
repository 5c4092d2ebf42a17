"""Alertmanager peers for tests: Debian's prometheus-alertmanager on loopback, killed by pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.daemon import free_port
from tests.tools import need

AMTOOL = "/usr/bin/amtool"
CONFIG = """
global:
  resolve_timeout: 5m
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: "null"
"""


def get_alerts(url: str, active_only: bool = True) -> list[dict[str, Any]]:
    """``GET /api/v2/alerts`` of one peer (bounded by a 5 s timeout)."""
    query = "" if active_only else "?active=true&silenced=true&inhibited=true&unprocessed=true"
    with urllib.request.urlopen(f"{url}/api/v2/alerts{query}", timeout=5) as response:
        result: list[dict[str, Any]] = json.loads(response.read())
        return result


def amtool_query(url: str, *matchers: str) -> str:
    """``amtool alert query`` against one peer: what an operator would type."""
    return subprocess.run(
        [AMTOOL, "alert", "query", f"--alertmanager.url={url}", "-o", "extended", *matchers],
        capture_output=True, text=True, timeout=20, check=True).stdout


@contextlib.contextmanager
def cluster(workdir: Path, peers: int = 2) -> Iterator[list[str]]:
    """Start ``peers`` Alertmanagers clustered on loopback; yield their base URLs; kill by pid."""
    config = workdir / "alertmanager.yml"
    config.write_text(CONFIG)
    web = [free_port() for _ in range(peers)]
    gossip = [free_port() for _ in range(peers)]
    processes: list[subprocess.Popen[bytes]] = []
    logs = contextlib.ExitStack()
    try:
        for index in range(peers):
            storage = workdir / f"am{index}"
            storage.mkdir()
            args = [need("prometheus-alertmanager"), f"--config.file={config}",
                    f"--storage.path={storage}",
                    f"--web.listen-address=127.0.0.1:{web[index]}",
                    f"--cluster.listen-address=127.0.0.1:{gossip[index]}",
                    "--cluster.advertise-address=" f"127.0.0.1:{gossip[index]}",
                    *(f"--cluster.peer=127.0.0.1:{gossip[other]}"
                      for other in range(peers) if other != index)]
            log = logs.enter_context((workdir / f"am{index}.log").open("wb"))
            processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        urls = [f"http://127.0.0.1:{port}" for port in web]
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"alertmanager at {url} not ready") from None
                    time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        logs.close()
