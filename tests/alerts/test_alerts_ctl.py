"""``virtmonctl alerts ...`` against a running daemon: tables, --json, exit codes."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from tests.alerts.control_env import Env, alert_daemon, domains_at, receiver
from tests.alerts.receiver import Recorder, serving
from virtmon.ctl import cli


async def ctl_run(env: Env, *argv: str) -> tuple[int, str, str]:
    """One virtmonctl command in a thread: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--socket", env.socket, *argv], stdout=out,
                                   stderr=err, environ={})
    return code, out.getvalue(), err.getvalue()


async def test_every_alerts_command(short_tmp: Path) -> None:
    """Every alerts action prints its table or JSON (exit 0); usage exits 2, refusals exit 1."""
    rec = Recorder()
    async with serving(rec), alert_daemon(short_tmp, [receiver("hook", rec.url)]) as env:
        assert await ctl_run(env, "alerts") == (0, "no alerts\n", "")
        code, out, _ = await ctl_run(env, "alerts", "silence", "--domain", "web-*", "--for",
                                     "1h", "--comment", "maint")
        assert code == 0 and out.startswith("silence 1: domain=web-* until ")
        code, out, _ = await ctl_run(env, "alerts", "silences")
        assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "RULE", "DOMAIN"]
        assert "web-*" in out and "maint" in out
        env.crash("web-1")
        await env.alert("web-1", "firing")
        code, out, _ = await ctl_run(env, "alerts", "list", "--state", "firing")
        assert code == 0 and out.splitlines()[0].split()[:2] == ["STATE", "SEVERITY"]
        assert out.splitlines()[0].split()[-1] == "FINGERPRINT"
        assert "web-1" in out and "by 1" in out and "Crash" in out
        assert " ago " in out.splitlines()[1]  # STARTED: how long ago, not a signed offset
        code, out, _ = await ctl_run(env, "alerts", "list", "--json")
        [alert] = json.loads(out)["alerts"]
        assert alert["domain"] == "web-1" and alert["silenced"] is True
        code, out, _ = await ctl_run(env, "alerts", "test", "hook")
        assert code == 0 and "queued for hook" in out
        await rec.wait_for(lambda: bool(rec.requests))
        code, out, _ = await ctl_run(env, "alerts", "outbox")
        assert code == 0 and out.splitlines()[0].split() == ["RECEIVER", "URL", "PENDING",
                                                             "OLDEST", "AGE"]
        assert await ctl_run(env, "--json", "alerts", "dead") == (0, '{\n  "rows": []\n}\n', "")
        assert (await ctl_run(env, "alerts", "dead"))[1] == "no dead letters\n"
        assert (await ctl_run(env, "alerts", "retry", "--all"))[1] == "0 dead letter(s) " \
            "queued again\n"
        code, _, err = await ctl_run(env, "alerts", "retry")
        assert code == 2 and "ID or --all" in err
        code, _, err = await ctl_run(env, "alerts", "retry", "77")
        assert code == 1 and "no dead letter with id 77" in err
        code, _, err = await ctl_run(env, "alerts", "silence", "--for", "1h")
        assert code == 2 and "--rule or --domain" in err
        code, _, err = await ctl_run(env, "alerts", "silence", "--domain", "x", "--for", "soon")
        assert code == 2 and "not a duration: 'soon'" in err  # the caller's mistake
        assert await ctl_run(env, "alerts", "unsilence", "1") == (0, "silence 1 ended\n", "")
        assert (await ctl_run(env, "alerts", "silences"))[1] == "no silences\n"
        code, out, _ = await ctl_run(env, "alerts", "silences", "--all", "--json")
        assert [s["active"] for s in json.loads(out)["silences"]] == [False]
        code, _, err = await ctl_run(env, "alerts", "test", "nope")
        assert code == 1 and "no receiver 'nope'" in err
        # The test alert, then web-1: still firing, released when its silence was ended.
        await rec.wait_for(lambda: "web-1" in domains_at(rec), timeout=30)
        assert domains_at(rec) == [None, "web-1"]
