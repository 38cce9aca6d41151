"""Generates config.schema.json from the config models, so editors validate and complete
config.json.

`python -m poller.config.schema` writes it; with `--check` it exits 1 when the file is
stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from poller.config.models import Config

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config.schema.json"


def build_schema() -> dict[str, Any]:
    """The JSON Schema of config.json: the canonical object, or a bare list of jobs."""
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs")
    schema["properties"]["$schema"] = {"type": "string", "description": "Ignored by Poller."}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Poller config.json",
        "description": "Jobs, environments and settings of a Poller daemon. "
        "Strings may use ${NAME} or ${NAME:-default} for environment variables.",
        "anyOf": [
            {"$ref": "#/$defs/Config"},
            {"type": "array", "items": {"$ref": "#/$defs/Job"}},
        ],
        "$defs": {**definitions, "Config": schema},
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poller.config.schema", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            sys.stderr.write(
                f"{SCHEMA_PATH.name} is out of date; run: python -m poller.config.schema\n"
            )
            return 1
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
