"""The base of every config model: unknown keys are errors, and a loaded config never changes."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict


def is_loopback(host: str) -> bool:
    """Whether a configured host is this machine only ("localhost", 127.0.0.1, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
