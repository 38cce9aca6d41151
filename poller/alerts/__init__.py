"""Alerts (SPEC §9): what they say (messages), how they go out (channels), when (sender)."""
