"""Where runs execute (SPEC §11): this process's worker pool (poller.executors.local, the
default) or `app.py worker` processes over Kafka (poller.executors.kafka). Both count
the runs going on per job in Slots, so max_instances means the same with either."""
