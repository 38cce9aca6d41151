"""Delivering one alert over one channel (SPEC §9): a webhook POST or a mail over SMTP.

Each `deliver` makes one attempt and raises DeliveryError saying why it failed; retries,
backoff and rate limits are poller.alerts.sender's. What leaves here is already redacted
(poller.alerts.messages builds it from redacted records).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import requests

from poller import __version__
from poller.alerts.messages import Alert
from poller.config.alerts import SmtpChannel, WebhookChannel
from poller.errors import PollerError

USER_AGENT = f"Poller/{__version__} (alerts)"


class DeliveryError(PollerError):
    """One delivery attempt failed; `reason` is a one-line text without secrets."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def deliver(channel: WebhookChannel | SmtpChannel, alert: Alert) -> None:
    """Send `alert` once over `channel`; raises DeliveryError."""
    if isinstance(channel, WebhookChannel):
        _post(channel, alert)
    else:
        _mail(channel, alert)


def _post(channel: WebhookChannel, alert: Alert) -> None:
    headers = {"User-Agent": USER_AGENT, **channel.headers}
    try:
        answer = requests.post(
            channel.url,
            json=alert.payload(),
            headers=headers,
            timeout=channel.timeout_seconds,
            allow_redirects=False,
            stream=True,  # the status is the answer: an endless or stalled body cannot hold us
        )
    except requests.Timeout:
        raise DeliveryError(f"no answer within {channel.timeout_seconds:g} s") from None
    except requests.RequestException as err:
        raise DeliveryError(f"could not connect ({type(err).__name__})") from None
    answer.close()
    if not 200 <= answer.status_code < 300:
        raise DeliveryError(f"the webhook answered HTTP {answer.status_code}")


def _mail(channel: SmtpChannel, alert: Alert) -> None:
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = channel.from_
    message["To"] = ", ".join(channel.to)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=channel.from_.rpartition("@")[2] or None)
    message["X-Poller-Alert"] = alert.kind
    message.set_content(alert.body())
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_seconds) as smtp:
            smtp.ehlo()
            if channel.starttls:
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{channel.host}:{channel.port} does not offer STARTTLS "
                        '(set "starttls": false only for a server on this machine)'
                    )
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if channel.username is not None and channel.password is not None:
                smtp.login(channel.username, channel.password.get_secret_value())
            smtp.send_message(message)
    except DeliveryError:
        raise
    except smtplib.SMTPAuthenticationError as err:
        raise DeliveryError(f"the SMTP server refused the login ({err.smtp_code})") from None
    except smtplib.SMTPResponseException as err:
        raise DeliveryError(f"the SMTP server answered {err.smtp_code}") from None
    except ssl.SSLError as err:
        raise DeliveryError(f"TLS failed ({err.reason or type(err).__name__})") from None
    except TimeoutError:
        raise DeliveryError(f"no answer within {channel.timeout_seconds:g} s") from None
    except (OSError, smtplib.SMTPException) as err:
        raise DeliveryError(f"could not deliver ({type(err).__name__}: {err})") from None
