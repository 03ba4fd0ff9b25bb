"""The mailer keeps its SMTP connection for the next letter, and never sends on a dead one."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from partnerflow.activities import email
from partnerflow.activities.email import Letter, Mailer, SmtpSettings
from partnerflow.mailsink import MailSink
from partnerflow.testing import free_port


class CountingMailer(Mailer):
    """A mailer that counts the connections it opens (each a greeting, EHLO and QUIT)."""

    def __init__(self, settings: SmtpSettings) -> None:
        super().__init__(settings)
        self.opened = 0

    def _connect(self) -> smtplib.SMTP:
        self.opened += 1
        return super()._connect()


async def _send(mailer: Mailer, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        letter = Letter(to=f"admin{i}@contoso.example", subject=f"letter {i}", body=f"body {i}")
        await mailer.send(mailer.build(letter, f"<{i}@partnerflow>"))


async def test_letters_in_a_row_share_one_connection(partnerflow_mail: MailSink) -> None:
    mailer = CountingMailer(SmtpSettings(port=partnerflow_mail.port))
    await _send(mailer, 5)
    assert (mailer.opened, len(partnerflow_mail.messages())) == (1, 5)
    mailer.close()
    await _send(mailer, 1, first=5)
    assert (mailer.opened, len(partnerflow_mail.messages())) == (2, 6)
    mailer.close()


async def test_a_connection_the_server_closed_is_not_used(tmp_path: Path) -> None:
    """The server restarts (an outage, or its idle timeout): the next letter opens a new
    connection and goes, with nothing refused and nothing sent twice."""
    sink = MailSink(tmp_path / "mail", port=free_port()).start()
    mailer = CountingMailer(SmtpSettings(port=sink.port))
    try:
        await _send(mailer, 2)
        sink.stop()
        sink.start()
        await _send(mailer, 2, first=2)
        assert mailer.opened == 2
        subjects = sorted(str(m["Subject"]) for m in sink.messages())
        assert subjects == [f"letter {i}" for i in range(4)]
    finally:
        mailer.close()
        sink.stop()


async def test_a_long_idle_connection_is_replaced(partnerflow_mail: MailSink, monkeypatch: pytest.MonkeyPatch) -> None:
    mailer = CountingMailer(SmtpSettings(port=partnerflow_mail.port))
    await _send(mailer, 1)
    monkeypatch.setattr(email, "IDLE_S", -1.0)  # every kept connection is now too old
    await _send(mailer, 1, first=1)
    assert (mailer.opened, len(partnerflow_mail.messages())) == (2, 2)
    mailer.close()


async def test_a_refused_letter_closes_its_connection(partnerflow_mail: MailSink) -> None:
    """A letter the server refuses fails, and the next one starts from a fresh conversation."""
    mailer = CountingMailer(SmtpSettings(port=partnerflow_mail.port))
    bad = Letter(to="admin@contoso.example", subject="s", body="x")
    message = mailer.build(bad, "<bad@partnerflow>")
    del message["To"]  # no recipient: refused after MAIL FROM, in mid-conversation
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await mailer.send(message)
    await _send(mailer, 1)
    assert (mailer.opened, len(partnerflow_mail.messages())) == (2, 1)
    mailer.close()
