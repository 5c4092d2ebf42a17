"""Calls operations over the control socket as whoever runs it, and prints every answer as JSON.

Run by the role tests under ``setpriv`` with a throwaway uid, so the daemon sees a real peer
with that uid (SO_PEERCRED): ``python -m tests.control.role_probe SOCKET < calls.json``, where
calls.json is a list of ``{"operation": NAME, "arguments": {...}}`` or ``{"get": PATH}``. Prints a
list of ``{"status": N, "document": {...}}`` in the same order (the result's document on 200).
Imports only the standard library and virtmon's client, as virtmonctl does.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from virtmon.ctl.client import ControlClient, Problem


def main() -> None:
    """Run the calls read from standard input and print their answers."""
    client = ControlClient(sys.argv[1], timeout=60)
    answers: list[dict[str, Any]] = []
    for request in json.load(sys.stdin):
        try:
            if "get" in request:
                result = client.get(request["get"])
            else:
                result = client.call(request["operation"], **request["arguments"])
            answers.append({"status": 200, "document": {"result": result}})
        except Problem as exc:
            answers.append({"status": exc.status, "document": exc.document
                            or {"title": exc.title, "detail": exc.detail}})
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
