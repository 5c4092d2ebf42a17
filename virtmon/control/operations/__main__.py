"""Print the coverage table of docs/control-api.md: ``python -m virtmon.control.operations``."""

from virtmon.control.operations import coverage_functions, coverage_table

print("\n".join(coverage_table(coverage_functions())))
