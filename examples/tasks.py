"""Small chain functions for the shipped config.json; each takes (input, context), returns a dict.

They need no outside service, so `python app.py` works on a fresh machine.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def disk_usage(data: dict[str, Any], context: Any) -> dict[str, Any]:
    """Measure the free space of a folder (input "path", default: the config folder)."""
    path = data.get("path") or str(Path.cwd())
    usage = shutil.disk_usage(path)
    return {
        "path": path,
        "free_percent": round(100 * usage.free / usage.total, 1),
    }


def report_low_disk(data: dict[str, Any], context: Any) -> dict[str, Any]:
    """Log a warning for a folder short of space (run only when the condition holds)."""
    context.logger.warning("low disk space on %s: %s%% free", data["path"], data["free_percent"])
    return {"alerted": True}


SOURCES = Path(__file__).parent / "sources"


def fetch_source(data: dict[str, Any], context: Any) -> dict[str, Any]:
    """A stand-in for one monitored API (examples/monitor.json): the answer of source NAME
    is examples/sources/NAME.json, so editing that file changes the answer and moving it
    away makes the source fail."""
    name = data["name"]
    try:
        answer = json.loads((SOURCES / f"{name}.json").read_text())
    except FileNotFoundError:
        raise RuntimeError(f"source {name} did not answer (no sources/{name}.json)") from None
    return {"answer": answer, "fetched_at": datetime.now(UTC).isoformat()}
