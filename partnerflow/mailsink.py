"""A local SMTP server that keeps every message as a file (Maildir).

What `make run` and the tests talk to instead of a real mail provider: a real
SMTP conversation, and mail a person (or a test) can open under `.dev/mail/`.
"""

from __future__ import annotations

import mailbox
import threading
from email.message import Message
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


class _FoldingMailbox(Mailbox):
    """A mailbox that keeps one copy per Message-ID, as Exchange and Gmail do.

    SMTP has no exactly-once: a sender that dies after the server took a message but
    before it learnt so sends it again. partnerflow sends the identical message (same
    Message-ID), and receiving systems fold it; this one files the second copy under
    `redelivered/` beside the Maildir, so it can still be counted.
    """

    def __init__(self, maildir: Path, redelivered: Path) -> None:
        super().__init__(maildir)
        self.redelivered = redelivered
        self._lock = threading.Lock()
        self._seen = {str(m["Message-ID"]) for m in read_maildir(maildir)}

    def handle_message(self, message: Message) -> None:
        message_id = str(message["Message-ID"])
        with self._lock:
            again = message["Message-ID"] is not None and message_id in self._seen
            self._seen.add(message_id)
            if again:
                copy = self.redelivered / f"{len(list(self.redelivered.iterdir())) + 1}.eml"
                copy.write_bytes(message.as_bytes())
                return
        super().handle_message(message)


class MailSink:
    def __init__(
        self, maildir: Path, host: str = "127.0.0.1", port: int = 1025, *, fold_redeliveries: bool = False
    ) -> None:
        self.maildir = maildir
        for sub in ("tmp", "new", "cur"):  # a Maildir is these three folders
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.host = host
        self._port = port
        self._controller: Controller | None = None
        self.fold_redeliveries = fold_redeliveries
        self.redelivered = maildir.parent / f"{maildir.name}-redelivered"

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> MailSink:
        """Listen (again, after `stop()`: an SMTP outage and its end, on the same port)."""
        handler: Mailbox = Mailbox(self.maildir)
        if self.fold_redeliveries:
            self.redelivered.mkdir(exist_ok=True)
            handler = _FoldingMailbox(self.maildir, self.redelivered)
        self._controller = Controller(handler, hostname=self.host, port=self._port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def redeliveries(self) -> int:
        """Identical messages (by Message-ID) delivered again and folded away."""
        return len(list(self.redelivered.iterdir())) if self.redelivered.exists() else 0

    def messages(self) -> list[mailbox.MaildirMessage]:
        return read_maildir(self.maildir)

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def text_of(message: Message, subtype: str = "plain") -> str:
    """A message's text part of `subtype` (`plain`, `html`), decoded; "" when it has none."""
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}":
            payload = part.get_payload(decode=True)
            charset = part.get_content_charset() or "utf-8"
            return payload.decode(charset) if isinstance(payload, bytes) else str(payload)
    return ""


def read_maildir(maildir: Path) -> list[mailbox.MaildirMessage]:
    """Every message in the folder, oldest delivery first."""
    box = mailbox.Maildir(maildir, create=True)
    return sorted((box.get_message(key) for key in box.iterkeys()), key=lambda m: m.get_date())
