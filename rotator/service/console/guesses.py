"""Wrong viewer tokens, counted: the console's sign-in must not be a token-guessing oracle.

A client that presents wrong viewer tokens (the sign-in form or an
``Authorization: Bearer`` header) :data:`PER_PEER` times within :data:`WINDOW`
is answered ``429`` with ``Retry-After`` until its oldest wrong guess leaves the
window; every client together may be wrong :data:`OVERALL` times per window, so
an attacker with many addresses gains little and a reverse proxy that makes every
client one peer still caps the rate. While a client waits, its token is not
checked at all, right or wrong (a guess that happens to be right must not be
told apart). A signed-in browser's cookie is not a guess and is never held back,
so someone guessing cannot lock out viewers who are already signed in.

Memory is bounded: at most :data:`PEERS` clients are remembered, the least
recently wrong dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["OVERALL", "PEERS", "PER_PEER", "WINDOW", "Guesses"]

#: wrong tokens one client may present per window
PER_PEER = 5
#: wrong tokens all clients together may present per window
OVERALL = 50
#: seconds a wrong token counts against its client
WINDOW = 300.0
#: clients remembered at most
PEERS = 1024


class Guesses:
    """Per-client and overall counts of wrong viewer tokens over a sliding window."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        per_peer: int = PER_PEER,
        overall: int = OVERALL,
        window: float = WINDOW,
        peers: int = PEERS,
    ) -> None:
        self._clock = clock
        self._per_peer, self._overall, self._window, self._peers = per_peer, overall, window, peers
        self._lock = threading.Lock()
        self._by_peer: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    def wait(self, peer: str) -> float:
        """Seconds before ``peer`` may present a token again; 0 when it may now."""
        now = self._clock()
        with self._lock:
            self._expire(self._all, now)
            mine = self._by_peer.get(peer)
            if mine is not None:
                self._expire(mine, now)
            waits = [0.0]
            if mine is not None and len(mine) >= self._per_peer:
                waits.append(mine[-self._per_peer] + self._window - now)
            if len(self._all) >= self._overall:
                waits.append(self._all[-self._overall] + self._window - now)
            return max(waits)

    def wrong(self, peer: str) -> None:
        """``peer`` presented a wrong token."""
        now = self._clock()
        with self._lock:
            mine = self._by_peer.pop(peer, None) or deque(maxlen=self._per_peer)
            mine.append(now)
            self._by_peer[peer] = mine  # most recently wrong last
            while len(self._by_peer) > self._peers:
                self._by_peer.popitem(last=False)
            self._all.append(now)
            while len(self._all) > self._overall:
                self._all.popleft()

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] + self._window <= now:
            times.popleft()
