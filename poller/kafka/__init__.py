"""Kafka (SPEC §10): the worker, its jobs and listings, its health port."""
