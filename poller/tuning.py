"""Process-wide knobs of the daemon, in one place, each with what it costs and what it gains.

Figures are from bench/bench_scheduler.py and bench/bench_api.py (10,000 jobs) on a
2-core machine; they move from machine to machine.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SWITCH_INTERVAL_SECONDS = 0.001
"""How long a thread running Python keeps the GIL from one that waits (Python's default: 5 ms).

Gains: the loop needs the GIL a few times on every wake; while an API request or a busy
run computes, each of those waits would otherwise make a fire up to 5 ms later. Costs:
more GIL hand-offs between busy threads (a few percent of their throughput).
"""


@contextmanager
def no_collection() -> Iterator[None]:
    """No garbage collection inside (start-up builds what the process will hold).

    Gains: collecting meanwhile only walks the new config and schedule again and again
    (with 10,000 jobs, 0.7-0.8 s to start instead of 0.9-1.1 s). Costs: garbage made inside
    waits for the block's end (start-up makes little).
    """
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def apply_for_daemon() -> None:
    """Set the daemon's switch interval (see SWITCH_INTERVAL_SECONDS)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def freeze_long_lived() -> None:
    """Move everything alive now out of the collector's full passes, and collect again.

    Gains: a full pass walks every object and stops every thread, the loop too (~120 ms
    with 10,000 jobs); the config and schedule live as long as the daemon. Costs: what is
    frozen and later dropped (a replaced config) is never freed: one config's worth per
    reload that changes jobs.
    """
    gc.freeze()
    gc.enable()
