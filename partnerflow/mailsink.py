"""A local SMTP server that keeps every message as a file (Maildir).

What `make run` and the tests talk to instead of a real mail provider: a real
SMTP conversation, and mail a person (or a test) can open under `.dev/mail/`.
"""

from __future__ import annotations

import mailbox
from email.message import Message
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


class MailSink:
    def __init__(self, maildir: Path, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.maildir = maildir
        for sub in ("tmp", "new", "cur"):  # a Maildir is these three folders
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self._controller = Controller(Mailbox(str(maildir)), hostname=host, port=port)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[Message]:
        box = mailbox.Maildir(str(self.maildir), create=True)
        return sorted(box, key=lambda m: m.get_date())

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def read_maildir(maildir: Path) -> list[Message]:
    box = mailbox.Maildir(str(maildir), create=True)
    return sorted(box, key=lambda m: m.get_date())
