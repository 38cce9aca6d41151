"""The web page at /ui: one HTML file with a little JavaScript and no build step.

The page holds no data, so it loads without a key; its script fetches everything from the
API, asking once for the key when the API answers 401.
"""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).with_name("ui.html")


def page() -> str:
    return PAGE.read_text(encoding="utf-8")
