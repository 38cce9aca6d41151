"""Where runs execute: the local worker pool (the default); Kafka workers follow (SPEC §11)."""
