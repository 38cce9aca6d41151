"""Poller's tests; a package, so that tests/platform.py never shadows the stdlib platform."""
