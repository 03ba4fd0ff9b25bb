"""Email over real SMTP: the messages partnerflow sends, rendered and delivered once.

Delivery goes through the outbox: a pending row is written before the message
leaves and marked sent after, so a retried activity finds it and sends nothing
twice. Plain text only: names cannot smuggle markup, and header values with line
breaks are refused by the `email` package itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

import aiosmtplib

from activities.records import utc_now


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 1025
    sender: str = "partnerflow@partnerflow.localhost"
    sender_name: str = "partnerflow"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0  # each SMTP step
    deadline_s: float = 20.0  # the whole conversation: well inside the activity's 30 s


@dataclass(frozen=True)
class Letter:
    """A rendered message, before it has an envelope."""

    to: str
    subject: str
    body: str


def message_id_for(key: str) -> str:
    # Stable across retries, so even a receiving system could drop a duplicate.
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@partnerflow>"


def _one_line(value: str) -> str:
    return " ".join(value.split())


class Mailer:
    """Sends one `Letter` over SMTP (STARTTLS and login when configured)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def build(self, letter: Letter, message_id: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = formataddr((self.settings.sender_name, self.settings.sender))
        message["To"] = letter.to
        message["Subject"] = _one_line(letter.subject)
        message["Message-ID"] = message_id
        message["Date"] = format_datetime(utc_now())
        # 8bit keeps the link on one greppable line (no quoted-printable soft breaks).
        message.set_content(letter.body, cte="8bit")
        return message

    async def send(self, message: EmailMessage) -> None:
        s = self.settings
        await asyncio.wait_for(
            aiosmtplib.send(
                message,
                hostname=s.host,
                port=s.port,
                start_tls=s.starttls,
                username=s.username,
                password=s.password,
                timeout=s.timeout_s,
            ),
            timeout=s.deadline_s,
        )
