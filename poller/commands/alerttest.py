"""`app.py alert-test CHANNEL`: one test alert over a channel of settings.alerts, now.

One attempt, in the foreground, so the operator sees at once whether the channel works and,
if not, why (the reason names no secret: the webhook's URL and the SMTP password are).
"""

from __future__ import annotations

import argparse

from poller.alerts.channels import DeliveryError, deliver
from poller.alerts.messages import trial_alert
from poller.clock import SystemClock
from poller.commands.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigSource,
    close_ids,
    load,
    say,
)
from poller.config.alerts import WebhookChannel
from poller.errors import ConfigError
from poller.redaction import Redactor
from poller.timeformat import utc_text


def cmd_alert_test(source: ConfigSource, args: argparse.Namespace) -> int:
    loaded = load(source)
    if isinstance(loaded, (str, ConfigError)):
        say(str(loaded))
        return EXIT_USAGE
    channels = loaded.settings.alerts
    channel = channels.get(args.channel)
    if channel is None:
        where = (
            f"{source.path} has no settings.alerts"
            if not channels
            else f"no channel {args.channel!r} in settings.alerts of {source.path}; "
            + close_ids(args.channel, channels, "channels")
        )
        say(f"app.py alert-test: {where}")
        return EXIT_USAGE
    redactor = Redactor(loaded.secret_values())
    kind = "webhook" if isinstance(channel, WebhookChannel) else f"mail to {', '.join(channel.to)}"
    try:
        deliver(channel, trial_alert(args.channel, utc_text(SystemClock().now())))
    except DeliveryError as err:
        reason = redactor.text(err.reason)
        say(f"app.py alert-test: channel {args.channel} ({kind}) failed: {reason}")
        return EXIT_FAILED
    print(f"sent a test alert over channel {args.channel} ({kind})")
    return EXIT_OK
