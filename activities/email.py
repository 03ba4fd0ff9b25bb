"""Email over real SMTP: the messages partnerflow sends, rendered and delivered once.

Delivery goes through the outbox: a pending row is written before the message
leaves and marked sent after, so a retried activity finds it and sends nothing
twice. A plain-text part and an HTML part made from it (activities/letters.py); a header
value with a line break is refused (`_header`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import io
import secrets
import select
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import policy
from email.charset import Charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr
from typing import Any

from opentelemetry import trace

from partnerflow.activities.records import utc_now
from partnerflow.states.names import TRACER


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
    body: str  # plain text, the part every client shows
    html: str = ""  # the same letter as HTML (multipart/alternative), when there is one
    language: str = "en"


def message_id_for(key: str) -> str:
    # Stable across retries, so even a receiving system could drop a duplicate.
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@partnerflow>"


#: Bodies in UTF-8, sent 8bit: the link stays on one greppable line (no quoted-printable
#: soft breaks); headers that are not ASCII are encoded words.
_BODY = Charset("utf-8")
_BODY.body_encoding = None  # type: ignore[assignment]  # None is the documented "7bit or 8bit"
#: compat32 as mail is written today: a body line that begins "From " is left as it is (an
#: mbox file's convention, which would turn it into ">From ").
_COMPAT32 = policy.compat32.clone(mangle_from_=False)


def _boundary(parts: list[MIMEText]) -> str:
    """A multipart boundary none of the (encoded) parts holds. Left to the generator, it is
    found by compiling a regular expression of a random boundary for every message, which
    cost more than the rest of the letter's serialisation."""
    while True:
        boundary = f"=_{secrets.token_hex(16)}"
        if not any(boundary in str(part.get_payload()) for part in parts):
            return boundary


def _part(text: str, subtype: str) -> MIMEText:
    part = MIMEText(text, subtype, _BODY, policy=_COMPAT32)  # type: ignore[arg-type]  # the stubs allow a name only
    del part["MIME-Version"]  # the message's header, not each part's
    return part


def _header(name: str, value: str) -> str | Header:
    """A header's value as compat32 writes it: refused if it would start a header of its own."""
    if len(value.splitlines()) > 1 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name}: a header value is one line, without control characters")
    return value if value.isascii() else Header(value, "utf-8", header_name=name)


def _one_line(value: str) -> str:
    # One line, and no RFC 2047 encoded word: the email package may decode one into the
    # header it writes out, line breaks and all. The models refuse both; this is the
    # second line of defence for names that reached the records some other way.
    return " ".join(value.split()).replace("=?", "= ?")


#: An SMTP connection is used again for the next letter if it has been idle no longer than
#: this (servers wait at least 5 minutes, RFC 5321 4.5.3.2.7), and at most `IDLE_KEPT` wait.
IDLE_S = 30.0
IDLE_KEPT = 8


class Mailer:
    """Sends one `Letter` over SMTP (STARTTLS and login when configured), on a connection kept
    from the last letter when there is one: a connection, its greeting, EHLO, STARTTLS, login
    and QUIT cost more than the letter itself, to the server as to the worker."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: list[tuple[smtplib.SMTP, float]] = []  # (connection, idle since), newest last
        self._idle_lock = threading.Lock()

    def build(self, letter: Letter, message_id: str) -> Message[Any, Any]:
        """The message as MIME: plain text and, when there is one, HTML as its alternative.

        Built with the `email` package's compat32 classes, a quarter of the cost of its header
        registry (which parses each header it is given); each header value is checked here
        instead: one line, and encoded (RFC 2047) when it is not ASCII. An address that is
        not ASCII needs SMTPUTF8, which only the newer policy writes: such a letter is built
        with it."""
        if not (letter.to.isascii() and self.settings.sender.isascii()):
            return self._build_international(letter, message_id)
        message: Message[Any, Any]
        if letter.html:
            parts = [_part(letter.body, "plain"), _part(letter.html, "html")]
            message = MIMEMultipart("alternative", boundary=_boundary(parts), _subparts=parts, policy=_COMPAT32)
        else:
            message = _part(letter.body, "plain")
            message["MIME-Version"] = "1.0"
        sender = formataddr((self.settings.sender_name, self.settings.sender), charset="utf-8")
        for name, value in (
            ("From", sender),
            ("To", letter.to),
            ("Subject", _one_line(letter.subject)),
            ("Message-ID", message_id),
            ("Date", format_datetime(utc_now())),
            ("Content-Language", letter.language),
        ):
            message[name] = _header(name, value)  # type: ignore[assignment]  # compat32 takes a Header too
        return message

    def _build_international(self, letter: Letter, message_id: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = formataddr((self.settings.sender_name, self.settings.sender))
        message["To"] = letter.to  # validated as one address; a line break here raises
        message["Subject"] = _one_line(letter.subject)
        message["Message-ID"] = message_id
        message["Date"] = format_datetime(utc_now())
        # 8bit keeps the link on one greppable line (no quoted-printable soft breaks).
        message.set_content(letter.body, cte="8bit")
        if letter.html:
            message.add_alternative(letter.html, subtype="html", cte="8bit")
        message["Content-Language"] = letter.language  # after the parts: setting content clears Content-*
        return message

    async def send(self, message: Message[Any, Any], on_accepted: Callable[[], None] | None = None) -> None:
        """Deliver `message`; `on_accepted` runs the moment the server has taken it.

        The conversation runs in a thread of its own and `on_accepted` (the outbox's "sent")
        in that same thread, as soon as the server answers: a worker that dies between the
        server taking a message and the outbox saying so makes the retry send it again, and
        this keeps that window to one database write (no event-loop or thread-pool hop).
        """
        loop = asyncio.get_running_loop()
        attributes: dict[str, str | int] = {"server.address": self.settings.host, "server.port": self.settings.port}
        # An SMTP error's text may quote the recipient: the span records that it failed, not what it said.
        tracer = trace.get_tracer(TRACER)
        with tracer.start_as_current_span(
            "smtp.send", attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            # The thread runs in this context: the outbox's "sent" is a span of the same trace.
            context = contextvars.copy_context()
            conversation = loop.run_in_executor(_SMTP_THREADS, context.run, self._converse, message, on_accepted)
            try:
                await asyncio.wait_for(conversation, timeout=self.settings.deadline_s)
            except Exception as error:
                span.set_status(trace.StatusCode.ERROR, type(error).__name__)
                raise

    def _converse(self, message: Message[Any, Any], on_accepted: Callable[[], None] | None) -> None:
        recipient = str(message["To"])  # one bare address (validated, and built so)
        data, options = _wire(message, international=not (recipient + self.settings.sender).isascii())
        smtp = self._kept() or self._connect()
        try:
            smtp.sendmail(self.settings.sender, [recipient], data, mail_options=options)
        except BaseException:
            smtp.close()  # no QUIT: mid-conversation it would be read as part of the message
            raise
        try:
            if on_accepted is not None:
                on_accepted()
        finally:
            self._keep(smtp)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        try:
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context())  # certificates checked
            if s.username and s.password:
                smtp.login(s.username, s.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _kept(self) -> smtplib.SMTP | None:
        """The newest idle connection the server has not closed, else None."""
        now = time.monotonic()
        with self._idle_lock:
            fresh = [(c, t) for c, t in self._idle if now - t <= IDLE_S]
            stale = [c for c, t in self._idle if now - t > IDLE_S]
            self._idle = fresh
            smtp = self._idle.pop()[0] if self._idle else None
        for old in stale:
            old.close()  # no QUIT: a connection the network dropped would hold this letter up
        if smtp is not None and _hung_up(smtp):
            smtp.close()
            return None
        return smtp

    def _keep(self, smtp: smtplib.SMTP) -> None:
        with self._idle_lock:
            if len(self._idle) < IDLE_KEPT:
                self._idle.append((smtp, time.monotonic()))
                return
        _goodbye(smtp)

    def close(self) -> None:
        """Say goodbye on every idle connection (the worker's shutdown)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for smtp, _ in idle:
            _goodbye(smtp)


def _wire(message: Message[Any, Any], *, international: bool) -> tuple[bytes, tuple[str, ...]]:
    """The message as SMTP carries it, and the MAIL options that needs. Not `send_message`:
    its generator turns a body line that begins "From " into ">From " (mbox's habit)."""
    # An address that is not ASCII (only the newer policy builds such a letter): SMTPUTF8.
    rules = policy.SMTPUTF8 if international else message.policy.clone(linesep="\r\n")
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=rules).flatten(message)
    return out.getvalue(), ("SMTPUTF8", "BODY=8BITMIME") if international else ()


def _hung_up(smtp: smtplib.SMTP) -> bool:
    """Has the server spoken on an idle connection? It only does to close it (EOF, or a 421
    before it goes): a letter sent there would fail, so it is not used. No round trip."""
    sock = smtp.sock
    if sock is None:
        return True
    waiting = select.poll()  # not select(): it refuses descriptors past 1024
    waiting.register(sock, select.POLLIN | select.POLLPRI)
    try:
        return bool(waiting.poll(0))
    except OSError:
        return True


def _goodbye(smtp: smtplib.SMTP) -> None:
    """QUIT on an idle connection, then close it."""
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.quit()
    smtp.close()


#: SMTP conversations block a thread each (at most `timeout_s` per step): their own pool,
#: so a slow mail server never queues the records' database calls behind it.
_SMTP_THREADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="smtp")
