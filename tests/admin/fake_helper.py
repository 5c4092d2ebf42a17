"""A stand-in admin helper that says it is ready, logs each request to a file and never answers."""

import json
import sys
from pathlib import Path

log = Path(sys.argv[1])
print(json.dumps({"event": "helper_ready", "pid": 0, "version": 0}), flush=True)
for line in sys.stdin:
    with log.open("a") as f:
        f.write(line)
