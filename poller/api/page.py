"""The web page at /ui and the API docs at /docs, with their files served from this process
(no build step, no internet).

The page holds no data, so it and its files load without a key; its script fetches
everything from the API with the key, which it takes from the address's fragment or asks
for once. Script and style are files of their own, so the page's CSP allows no inline code.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

FOLDER = Path(__file__).with_name("static")
"""page.html, page.js, page.css and favicon.svg, served at /ui, /ui/assets/ and /favicon.ico."""

router = APIRouter(include_in_schema=False)


def mount_files(app: FastAPI) -> None:
    """Serve Swagger UI's files at /docs/assets and the page's at /ui/assets."""
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    app.mount("/ui/assets", StaticFiles(directory=FOLDER), name="page-assets")


@router.get("/docs", response_class=HTMLResponse)
def get_docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Poller API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )


@router.get("/ui", response_class=HTMLResponse)
def get_ui() -> HTMLResponse:
    return HTMLResponse((FOLDER / "page.html").read_text(encoding="utf-8"))


@router.get("/favicon.ico")
def get_favicon() -> Response:
    """The page's icon, an SVG: at the path every browser asks for, with no key, as the page."""
    return Response(
        (FOLDER / "favicon.svg").read_bytes(),
        media_type="image/svg+xml",
        headers={"Cache-Control": "max-age=86400"},
    )
