"""Process-wide knobs of the daemon, in one place, each with what it costs and what it gains.

Figures are from bench/bench_tuning.py (each knob off and on, 10,000 jobs, side by side) on
a 2-core machine; they move from machine to machine.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SWITCH_INTERVAL_SECONDS = 0.001
"""How long a thread running Python keeps the GIL from one that waits (Python's default: 5 ms).

Gains: the loop needs the GIL a few times on every wake; while an API request or a busy
run computes, each of those waits would otherwise make a fire up to 5 ms later (a thread
waking from a sleep beside one running Python: 5.2 ms late at the median, 1.2 ms with this).
Costs: more GIL hand-offs between busy threads (two running the same work at once take
10% longer).
"""


@contextmanager
def no_collection() -> Iterator[None]:
    """No garbage collection inside (start-up builds what the process will hold).

    Gains: collecting meanwhile only walks the new config and schedule again and again
    (loading and planning 10,000 jobs: 0.50 s instead of 0.53 s; more when the history's
    start-up work runs too). Costs: garbage made inside waits for the block's end (start-up
    makes little).
    """
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def apply_for_daemon() -> None:
    """Set the daemon's switch interval (see SWITCH_INTERVAL_SECONDS)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def lean_log_records() -> None:
    """Log records without the thread, process and source-line fields no format of ours shows.

    Gains: logging looks each of them up for every record, the source line by walking the
    stack (the logging HOWTO's "Optimization"); a line to the log file costs 12.3 µs instead
    of 15.4 µs. Costs: a format that asks for `%(threadName)s`, `%(process)d` or
    `%(lineno)d` would show placeholders; none of ours does.
    """
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None


def freeze_long_lived() -> None:
    """Move everything alive now out of the collector's full passes, and let it run again.

    Gains: a full pass walks every object and stops every thread, the loop too (40 ms with
    a started daemon of 10,000 jobs; under a microsecond once they are frozen); the config
    and schedule live as long as the daemon. Costs: what is frozen and later dropped (a
    replaced config) is never freed: one config's worth per reload that changes jobs.
    """
    gc.freeze()
    gc.enable()
