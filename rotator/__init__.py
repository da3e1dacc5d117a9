"""rotator: keeps API access tokens fresh and publishes them where consumers read them."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
