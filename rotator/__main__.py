from __future__ import annotations

import sys

from rotator.cli import main

sys.exit(main())
