"""The web page at /ui: an HTML file, its script and its style, with no build step.

The page holds no data, so it and its files load without a key; its script fetches
everything from the API with the key, which it takes from the address's fragment or asks
for once. Script and style are files of their own, so the page's CSP allows no inline code.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).with_name("page")
"""page.html, page.js and page.css, served at /ui and /ui/assets/."""


def page() -> str:
    return (FOLDER / "page.html").read_text(encoding="utf-8")
