"""Python functions used by the shipped config.json (`"function": "examples.tasks:…"`)."""
