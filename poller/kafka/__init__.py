"""Kafka (SPEC §10): the worker, its jobs and listings, its health port, the daemon's publisher."""

import logging

LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
"""librdkafka's own lines (a broker down, a timed-out request), in Poller's log."""
