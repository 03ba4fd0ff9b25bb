"""A local SMTP server that keeps every message as a file (Maildir).

What `make run` and the tests talk to instead of a real mail provider: a real
SMTP conversation, and mail a person (or a test) can open under `.dev/mail/`.
"""

from __future__ import annotations

import mailbox
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


class MailSink:
    def __init__(self, maildir: Path, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.maildir = maildir
        for sub in ("tmp", "new", "cur"):  # a Maildir is these three folders
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.host = host
        self._port = port
        self._controller: Controller | None = None

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> MailSink:
        """Listen (again, after `stop()`: an SMTP outage and its end, on the same port)."""
        self._controller = Controller(Mailbox(self.maildir), hostname=self.host, port=self._port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[mailbox.MaildirMessage]:
        return read_maildir(self.maildir)

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def read_maildir(maildir: Path) -> list[mailbox.MaildirMessage]:
    """Every message in the folder, oldest delivery first."""
    box = mailbox.Maildir(maildir, create=True)
    return sorted((box.get_message(key) for key in box.iterkeys()), key=lambda m: m.get_date())
