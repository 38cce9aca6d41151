"""`app.py kafka push-job FILE | tail TOPIC | check | replay-dlq`: an operator's tools for
the workers' topics (SPEC §10), on the config's settings.kafka and the seed's variables.

A pushed job is sent as written: a `${NAME}` in it stays as text, to be filled in by the
worker from its own environment, so no secret travels through Kafka.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from poller.commands.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigSource, load, say
from poller.config.kafka import KafkaSettings, PollingJob, with_environment
from poller.config.load import parse_document
from poller.errors import ConfigError

TIMEOUT_SECONDS = 10.0
LIBRDKAFKA = logging.getLogger("poller.commands.librdkafka")
LIBRDKAFKA.addHandler(logging.NullHandler())
LIBRDKAFKA.propagate = False  # a command says what failed itself, in one line


def quiet(settings: KafkaSettings) -> dict[str, Any]:
    """A client's settings, librdkafka's own lines (retries, a broker down) left out."""
    return {**settings.client_config(), "logger": LIBRDKAFKA}


class Placeholders(Mapping[str, str]):
    """Every `${NAME}` is set, to "x": a pushed job is checked for its shape only."""

    def __getitem__(self, name: str) -> str:
        return "x"

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def cmd_kafka(source: ConfigSource, args: argparse.Namespace) -> int:
    loaded = load(source, unset_ok=True)
    if isinstance(loaded, (str, ConfigError)):
        say(str(loaded))
        return EXIT_USAGE
    settings = with_environment(loaded.settings.kafka, os.environ)
    executor = loaded.settings.executor
    args.executor_topics = (
        (executor.runs_topic, executor.results_topic, executor.dlq_topic)
        if executor.type == "kafka"
        else ()
    )
    action = {
        "push-job": push_job,
        "tail": tail,
        "check": check,
        "replay-dlq": replay_dlq,
    }[args.kafka_command]
    return action(settings, args)


def push_job(settings: KafkaSettings, args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
        job = parse_document(text, path.name, PollingJob, Placeholders(), fill_only="source_config")
    except (OSError, UnicodeDecodeError) as err:
        say(f"app.py kafka push-job: cannot read {path}: {err}")
        return EXIT_USAGE
    except ConfigError as err:
        say(f"app.py kafka push-job: {path} is not a polling job:\n" + str(err).split("\n", 1)[1])
        return EXIT_USAGE
    value = json.dumps(json.loads(text), separators=(",", ":")).encode()
    where: dict[str, Any] = {}

    def delivered(error: Any, message: Any) -> None:
        where.update(error=error, partition=message.partition(), offset=message.offset())

    producer = Producer(settings.producer_config(LIBRDKAFKA))
    try:
        producer.produce(
            settings.polling_topic, value=value, key=job.job_id.encode(), on_delivery=delivered
        )
        producer.flush(TIMEOUT_SECONDS)
    except KafkaException as err:
        where["error"] = err
    if not where or where.get("error") is not None:
        why = where.get("error") or f"no answer within {TIMEOUT_SECONDS:g} s"
        say(f"app.py kafka push-job: not delivered to {settings.bootstrap_servers}: {why}")
        return EXIT_FAILED
    print(
        f"pushed job {job.job_id} to {settings.polling_topic} "
        f"(partition {where['partition']}, offset {where['offset']})"
    )
    return EXIT_OK


def tail(settings: KafkaSettings, args: argparse.Namespace) -> int:
    """Print a topic's messages, one JSON object a line, from its start (or only new ones).

    It reads every partition by assignment, in no group: it waits for no rebalance (a
    group's join waits for the members that died to time out) and moves no one's offsets.
    """
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException
    from confluent_kafka import TopicPartition as Partition

    consumer = Consumer(
        {"group.id": f"poller-tail-{uuid.uuid4()}", "enable.auto.commit": False, **quiet(settings)}
    )
    try:
        found = consumer.list_topics(args.topic, timeout=TIMEOUT_SECONDS).topics.get(args.topic)
    except KafkaException as err:
        consumer.close()
        say(f"app.py kafka tail: {settings.bootstrap_servers} cannot be reached: {err}")
        return EXIT_FAILED
    if found is None or found.error is not None or not found.partitions:
        consumer.close()
        say(f"app.py kafka tail: no topic {args.topic} on {settings.bootstrap_servers}")
        return EXIT_USAGE
    start = OFFSET_END if args.new else OFFSET_BEGINNING
    consumer.assign([Partition(args.topic, p, start) for p in sorted(found.partitions)])
    shown, idle = 0, 0.0
    try:
        while args.count is None or shown < args.count:
            message = consumer.poll(0.5)
            if message is None:
                idle += 0.5
                if args.idle_seconds is not None and idle >= args.idle_seconds:
                    break
                continue
            if message.error() is not None:
                say(f"app.py kafka tail: {message.error()}")
                continue
            idle = 0.0
            print(json.dumps(_shown(message), ensure_ascii=False), flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return EXIT_OK


def _shown(message: Any) -> dict[str, Any]:
    raw = message.value() or b""
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw.decode("utf-8", "replace")
    key = message.key()
    return {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "key": None if key is None else key.decode("utf-8", "replace"),
        "value": value,
    }


def check(settings: KafkaSettings, args: argparse.Namespace) -> int:
    """Can the broker be reached, and do the topics exist (--create-topics makes them)?"""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(quiet(settings))
    try:
        metadata = admin.list_topics(timeout=TIMEOUT_SECONDS)
    except KafkaException as err:
        say(f"app.py kafka check: {settings.bootstrap_servers} cannot be reached: {err}")
        return EXIT_FAILED
    brokers = ", ".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    print(f"brokers: {brokers}")
    wanted = (
        settings.polling_topic,
        settings.file_event_topic,
        settings.dlq_topic,
        *args.executor_topics,  # settings.executor's, when it is kafka
    )
    missing = [topic for topic in wanted if topic not in metadata.topics]
    if missing and args.create_topics:
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=args.partitions, replication_factor=1) for t in missing]
        )
        for topic, future in futures.items():
            try:
                future.result(TIMEOUT_SECONDS)
                print(f"created {topic} ({args.partitions} partition(s))")
            except KafkaException as err:
                say(f"app.py kafka check: {topic} could not be created: {err}")
                return EXIT_FAILED
        metadata = admin.list_topics(timeout=TIMEOUT_SECONDS)
        missing = [topic for topic in wanted if topic not in metadata.topics]
    for topic in wanted:
        found = metadata.topics.get(topic)
        state = "missing" if found is None else f"{len(found.partitions)} partition(s)"
        print(f"{topic}: {state}")
    if missing:
        say("app.py kafka check: missing topics; `app.py kafka check --create-topics` makes them")
        return EXIT_FAILED
    return EXIT_OK


def replay_dlq(settings: KafkaSettings, args: argparse.Namespace) -> int:
    """Put the dead letters back on polling_topic, each as it was, once (a group's offsets)."""
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "group.id": f"{settings.group_id}-replay",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **quiet(settings),
        }
    )
    producer = Producer(settings.producer_config(LIBRDKAFKA))
    consumer.subscribe([settings.dlq_topic])
    replayed, idle = 0, 0.0
    try:
        while idle < args.idle_seconds:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                idle += 0.5
                continue
            idle = 0.0
            letter = _shown(message)["value"]
            original = letter.get("message") if isinstance(letter, dict) else None
            if original is None:
                say(f"app.py kafka replay-dlq: offset {message.offset()} is no dead letter; left")
            else:
                body = original if isinstance(original, str) else json.dumps(original)
                producer.produce(settings.polling_topic, value=body.encode(), key=message.key())
                if producer.flush(TIMEOUT_SECONDS):
                    say("app.py kafka replay-dlq: the broker did not acknowledge; stopped")
                    return EXIT_FAILED
                replayed += 1
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
    print(
        f"replayed {replayed} dead letter(s) from {settings.dlq_topic} to {settings.polling_topic}"
    )
    return EXIT_OK


def add_parser(commands: Any, command: Any, config_option: Any) -> None:
    """The `kafka` command's own sub-commands (poller.commands.parser calls this, with how
    it makes a command and gives a parser its --config)."""
    kafka = command(
        commands,
        "kafka",
        "push a polling job, tail a topic, check the broker, replay dead letters",
        "Operator tools for the workers' topics, on settings.kafka (and the "
        "KAFKA_BOOTSTRAP_SERVERS, POLLING_QUEUE_TOPIC, … variables).",
    )
    actions = kafka.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)
    push = actions.add_parser("push-job", help="send a polling job (a JSON file) to the workers")
    push.add_argument(
        "file", metavar="FILE", help="a JSON polling job, e.g. examples/polling-job.json"
    )
    tailing = actions.add_parser("tail", help="print a topic's messages as JSON lines")
    tailing.add_argument("topic", metavar="TOPIC")
    tailing.add_argument("--new", action="store_true", help="only messages from now on")
    tailing.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    tailing.add_argument(
        "--idle-seconds", type=float, metavar="S", help="stop after S seconds without a message"
    )
    checking = actions.add_parser("check", help="is the broker there, and are the topics?")
    checking.add_argument("--create-topics", action="store_true", help="create missing topics")
    checking.add_argument("--partitions", type=int, default=3, help="for created topics (3)")
    replay = actions.add_parser("replay-dlq", help="put dead letters back on the polling topic")
    replay.add_argument(
        "--idle-seconds", type=float, default=3.0, metavar="S", help="stop after S quiet seconds"
    )
    for action in (push, tailing, checking, replay):
        config_option(action)
