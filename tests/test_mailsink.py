"""The SMTP sink: every message kept as a file; optionally one copy per Message-ID."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest

from partnerflow.mailsink import MailSink
from partnerflow.testing import free_port


def _send_twice(port: int) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@partnerflow.example", "b@contoso.example", "hello"
    message["Message-ID"] = "<same@partnerflow>"
    message.set_content("once, really")
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(message)


@pytest.mark.parametrize(("fold", "kept", "folded"), [(False, 2, 0), (True, 1, 1)])
def test_a_redelivered_message_is_kept_or_folded(tmp_path: Path, fold: bool, kept: int, folded: int) -> None:
    with MailSink(tmp_path / "mail", port=free_port(), fold_redeliveries=fold) as sink:
        _send_twice(sink.port)
        assert (len(sink.messages()), sink.redeliveries()) == (kept, folded)


def test_folding_remembers_what_it_holds_across_a_restart(tmp_path: Path) -> None:
    sink = MailSink(tmp_path / "mail", port=free_port(), fold_redeliveries=True).start()
    _send_twice(sink.port)
    sink.stop()
    sink.start()  # an outage ends: the same port, the same mailbox
    _send_twice(sink.port)
    sink.stop()
    assert (len(sink.messages()), sink.redeliveries()) == (1, 3)
