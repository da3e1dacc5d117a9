"""``python -m rotator``: no core dumps before anything reads a secret, then the command line."""

from __future__ import annotations

import sys

from rotator.service.coredump import forbid_core_dumps

forbid_core_dumps()

from rotator.cli import main  # noqa: E402 - after the process is made not dumpable

sys.exit(main())
