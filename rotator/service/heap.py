"""The daemon's long-lived objects, kept out of the garbage collector's full passes.

The configuration, the accounts and their scheduled jobs live as long as the
process (or until a reload), and at 100,000 accounts they are about two million
objects: every full pass of the cyclic garbage collector walked them all, a
pause of one to several seconds with every thread stopped, which was the steady
state's worst lateness. They are moved out of the collector's sight
(``gc.freeze``) once built and again once every account had its first run;
a reload gives them back (``gc.unfreeze``), collects, and freezes the new set.
Memory is still freed by reference counting; only cycles among frozen objects
wait for the next reload.
"""

from __future__ import annotations

import gc

__all__ = ["freeze", "refreeze"]


def freeze() -> None:
    """Move every object alive now out of the collector's sight (``gc.freeze``)."""
    gc.freeze()


def refreeze() -> None:
    """Give every frozen object back to the collector, collect, and freeze what lives."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
