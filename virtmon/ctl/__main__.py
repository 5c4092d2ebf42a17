"""``python -m virtmon.ctl``: the same as ``virtmonctl``."""

import sys

from virtmon.ctl.cli import main

sys.exit(main())
