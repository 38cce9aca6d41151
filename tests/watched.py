"""A stand-in monitored service for the monitoring tests of `app.py run`, the API and the page.

`install(folder, a=1, down=0)` writes the module `watched` beside a test's config and its
answer: sources named a and down with those prices. `watched:sources` reads the answer (so
`answer(folder, a=5, down=0)` changes it between runs) and `watched:fetch`, run per source
by WATCH_CHAIN's for_each, returns the source's price; the source named "down" fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODULE = """
import json, pathlib

def sources(data, context):
    return json.loads((pathlib.Path(__file__).parent / "answer.json").read_text())

def fetch(data, context):
    if data["name"] == "down":
        raise RuntimeError("source down is not answering")
    return {"price": data["price"]}
"""
WATCH_CHAIN: list[list[Any]] = [
    [{"function": "watched:sources"}],
    [{"for_each": "sources", "key": "name", "steps": [[{"function": "watched:fetch"}]]}],
]
"""The sources, then one fetch per source, each named by its name."""


def install(folder: Path, **prices: Any) -> None:
    (folder / "watched.py").write_text(MODULE)
    answer(folder, **prices)


def answer(folder: Path, **prices: Any) -> None:
    """What the sources answer from now on: one source per name, in this order."""
    sources = [{"name": name, "price": price} for name, price in prices.items()]
    (folder / "answer.json").write_text(json.dumps({"sources": sources}))
