"""Print the coverage table: ``python -m virtmon.control.operations API-DOCUMENT...``."""

import sys
from pathlib import Path

from virtmon.control.operations import api_functions, coverage_table

print("\n".join(coverage_table(api_functions(Path(p).read_text() for p in sys.argv[1:]))))
