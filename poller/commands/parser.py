"""The command line: `app.py [--config PATH] [COMMAND] ...`, --config before or after it."""

from __future__ import annotations

import argparse

from poller.commands import kafkacmd
from poller.commands.options import count_argument, instant_argument
from poller.run.results import RUN_STATUSES

DESCRIPTION = """\
Poller runs chains of API calls on schedules. Without a command it runs the daemon on
./config.json (or --config PATH, or $POLLER_CONFIG) until Ctrl-C or SIGTERM; edit the
file while it runs and it reloads.

The commands beside it only read, and need none of the daemon's secrets (but `run` and
`alert-test`):
  app.py check               is the config valid, and when does each job fire next?
  app.py jobs                every job at a glance: schedule, next fire, last run
  app.py history [JOB_ID]    recent runs, newest first; --run RUN_ID shows one in full
  app.py status              the daemons running on the state database
  app.py run JOB_ID          run a job's chain now and print what it did
  app.py alert-test CHANNEL  send a test alert over one of settings.alerts' channels

Kafka (settings.kafka):
  app.py worker              consume polling jobs, list their sources, publish file events;
                             with settings.executor kafka, run the daemons' runs (--runs: only)
  app.py kafka ACTION        push-job FILE, tail TOPIC, check, replay-dlq
"""


def build_parser() -> argparse.ArgumentParser:
    # Each parser gets its own --config action: argparse's `parents` share action objects,
    # and a default set on one would leak into the others (`--config X check` was lost).
    parser = argparse.ArgumentParser(
        prog="app.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_option(parser, default=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = _command(
        commands,
        "check",
        "validate the config and show when each job fires next",
        "Check the config as the daemon would read it: every problem at once, each with "
        "its line, plus chain functions that cannot be imported and ${NAME} variables not "
        "set in this shell. Then list each job with its next fire times, counted from the "
        "daemon's stored anchors when its state database exists. Exit 0 when the config "
        "can run here, 1 when not.",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--count", type=count_argument, default=3, metavar="N", help="fire times per job (3)"
    )
    check.add_argument(
        "--after",
        type=instant_argument,
        metavar="ISO",
        help="list fires after this instant instead of now (without an offset it is read "
        "in settings.timezone)",
    )

    jobs = _command(
        commands,
        "jobs",
        "list the jobs: schedule, next fire, last run",
        "One line per job: its id, whether it is paused, its schedule in words, its next "
        "fire and how its last run ended.",
    )
    jobs.add_argument("--json", action="store_true", help="print the list as JSON")

    run = _command(
        commands,
        "run",
        "run one job's chain now and print its record as JSON",
        "Run one job's chain now, in the foreground, as the daemon would (it needs the "
        "config's secrets in this shell). The run's record is printed as JSON on stdout "
        "and kept in the history; the log goes to the log file and stderr. Ctrl-C stops "
        "the run and records it as interrupted. Exit 0 on success or skip, 1 on failure, "
        "2 on a usage or config error, 130 on Ctrl-C, 143 on SIGTERM.",
    )
    run.add_argument("job_id", metavar="JOB_ID", help="the job's id (app.py jobs lists them)")
    run.add_argument(
        "--force", action="store_true", help="run even on one of the job's blackout days"
    )
    run.add_argument(
        "--alerts",
        action="store_true",
        help="send the run's alerts and pings as the daemon would, and move its change "
        "baseline (without it a manual run only says whether the output changed)",
    )

    alert_test = _command(
        commands,
        "alert-test",
        "send a test alert over one channel",
        "Send one test alert over a channel of settings.alerts (it needs the channel's "
        "secrets in this shell), and say whether it was delivered. Exit 0 when it was, 1 "
        "when the channel failed, 2 on a usage or config error.",
    )
    alert_test.add_argument(
        "channel", metavar="CHANNEL", help="the channel's name in settings.alerts"
    )

    worker = _command(
        commands,
        "worker",
        "run a Kafka worker: polling jobs in, file events out; and run requests",
        "Consume polling jobs from settings.kafka.polling_topic, list each job's source, "
        "publish one event per new or changed file to file_event_topic and commit the job "
        "once they are acknowledged; invalid jobs and dead sources go to dlq_topic. "
        'With settings.executor {"type": "kafka"}, also run the chains of the daemons\' '
        "run requests (runs_topic) and publish their records (results_topic). "
        "SIGTERM or Ctrl-C finishes the job or run in hand, then stops. The log is "
        "worker.log beside settings.log_file.",
    )
    worker.add_argument(
        "--runs",
        action="store_true",
        help="only run requests, no polling jobs (needs settings.executor type kafka)",
    )
    worker.add_argument(
        "--concurrency",
        type=count_argument,
        default=1,
        metavar="N",
        help="handle N jobs or runs at once, each on a consumer of its own in the group, as "
        "N workers would (the busy ones are at most the topics' partitions); 1 by default",
    )
    kafkacmd.add_parser(
        commands, _command, lambda action: _config_option(action, default=argparse.SUPPRESS)
    )

    history = _command(
        commands,
        "history",
        "show recent runs, newest first",
        "Show recent runs, newest first, with the reason a run failed or was skipped "
        "(shortened; --run RUN_ID shows one run in full, with its steps).",
    )
    history.add_argument("job_id", nargs="?", metavar="JOB_ID", help="only this job's runs")
    history.add_argument(
        "--limit", type=count_argument, default=20, metavar="N", help="how many runs (20)"
    )
    history.add_argument(
        "--status",
        choices=RUN_STATUSES,
        metavar="STATUS",
        help="only runs that ended so: " + ", ".join(RUN_STATUSES),
    )
    history.add_argument("--run", metavar="RUN_ID", help="one run in full, with its steps")
    history.add_argument("--json", action="store_true", help="print the runs' full records as JSON")

    status = _command(
        commands,
        "status",
        "list the daemons running on the state database",
        "List the daemons using settings.state_db: with PostgreSQL every daemon sharing it "
        "(host, pid, version, start, last heartbeat; one silent for "
        "settings.daemon_lease_seconds is marked), with SQLite the one that holds it. Exit 0 "
        "when one is running, 1 when none is.",
    )
    status.add_argument("--json", action="store_true", help="print them as JSON")
    return parser


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=summary, description=description)
    _config_option(command, default=argparse.SUPPRESS)  # keeps one given before the command
    return command


def _config_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--config",
        default=default,
        metavar="PATH",
        help="the config file (default: $POLLER_CONFIG, else ./config.json)",
    )
