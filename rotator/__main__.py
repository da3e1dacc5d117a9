"""``python -m rotator``: the command line (which makes the process not dumpable first)."""

from __future__ import annotations

import sys

from rotator.cli import main

sys.exit(main())
