"""The HTTP API of a running daemon (SPEC §8): routers per concern, assembled by
poller.api.app and served on a thread of the daemon by poller.api.server."""
