"""The mailer keeps its SMTP connection for the next letter, and never sends on a dead one."""

from __future__ import annotations

import smtplib
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from partnerflow.activities import email
from partnerflow.activities.email import Letter, Mailer, SmtpSettings
from partnerflow.mailsink import MailSink, text_of
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


class Refusing:
    """An SMTP server with no mailbox for `nobody@`: it refuses at RCPT, in mid-conversation."""

    def __init__(self) -> None:
        self.delivered: list[list[str]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered.append(list(envelope.rcpt_tos))
        return "250 OK"


async def test_a_refused_letter_closes_its_connection() -> None:
    """A letter the server refuses fails, and the next one starts from a fresh conversation."""
    server = Refusing()
    controller = Controller(server, hostname="127.0.0.1", port=free_port())
    controller.start()
    mailer = CountingMailer(SmtpSettings(port=controller.port))
    try:
        refused = mailer.build(Letter(to="nobody@contoso.example", subject="s", body="x"), "<bad@partnerflow>")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await mailer.send(refused)
        await _send(mailer, 1)
        assert (mailer.opened, server.delivered) == (2, [["admin0@contoso.example"]])
    finally:
        mailer.close()
        controller.stop()


@pytest.mark.parametrize(
    ("settings", "letter"),
    [
        (
            SmtpSettings(sender_name="partnerflow\r\nBcc: all@example.com"),
            Letter(to="a@b.example", subject="s", body="x"),
        ),
        (SmtpSettings(), Letter(to="a@b.example\nBcc: all@example.com", subject="s", body="x")),
        (SmtpSettings(), Letter(to="a@b.example", subject="s", body="x", language="en\r\nBcc: all@example.com")),
        (SmtpSettings(), Letter(to="a@b.example\x0bBcc: all@example.com", subject="s", body="x")),
    ],
    ids=["sender-name", "to", "language", "vertical-tab"],
)
def test_no_header_value_may_start_a_header_of_its_own(settings: SmtpSettings, letter: Letter) -> None:
    with pytest.raises(ValueError, match="a header value is one line"):
        Mailer(settings).build(letter, "<id@partnerflow>")


def test_names_that_are_not_ascii_are_encoded_and_read_back_the_same() -> None:
    subject = "Fabrikam möchte der Cloud-Reseller von Contoso Ltd werden — 株式会社"
    built = Mailer(SmtpSettings(sender_name="Müller & Söhne")).build(
        Letter(to="a@b.example", subject=subject, body="Grüße", html="<p>Grüße</p>", language="de"), "<id@partnerflow>"
    )
    wire = built.as_bytes()
    assert wire.isascii() is False and all(line.isascii() for line in wire.split(b"\n\n", 1)[0].splitlines())
    parsed = message_from_bytes(wire, policy=policy.default)
    assert (parsed["Subject"], parsed["From"].addresses[0].display_name) == (subject, "Müller & Söhne")
    assert parsed.get_body(("plain",)).get_content() == "Grüße"  # type: ignore[union-attr]
    assert parsed.get_body(("html",)).get_content() == "<p>Grüße</p>"  # type: ignore[union-attr]


async def test_an_address_that_is_not_ascii_goes_by_smtputf8() -> None:
    server = Refusing()
    controller = Controller(server, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=True)
    controller.start()
    mailer = Mailer(SmtpSettings(port=controller.port))
    try:
        await mailer.send(mailer.build(Letter(to="jörg@contoso.example", subject="s", body="x"), "<u@partnerflow>"))
        assert server.delivered == [["jörg@contoso.example"]]
    finally:
        mailer.close()
        controller.stop()


async def test_a_line_that_begins_with_from_arrives_as_written(partnerflow_mail: MailSink) -> None:
    mailer = Mailer(SmtpSettings(port=partnerflow_mail.port))
    body = "Hello\nFrom now on, Fabrikam is your partner.\n"
    await mailer.send(mailer.build(Letter(to="a@b.example", subject="s", body=body, html="<p>x</p>"), "<f@p>"))
    [message] = partnerflow_mail.messages()
    assert text_of(message) == body
    mailer.close()


def test_the_boundary_is_in_no_part_and_the_parts_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mailer picks the multipart boundary itself (the generator's way compiles a regular
    expression per message): one that a part holds is passed over."""
    body = "Your code: =_" + "a" * 32  # the first boundary the mailer will try
    tries = iter(["a" * 32, "b" * 32])
    monkeypatch.setattr(email.secrets, "token_hex", lambda _n: next(tries))
    mailer = Mailer(SmtpSettings())
    built = mailer.build(Letter(to="admin@contoso.example", subject="s", body=body, html="<p>hi</p>"), "<1@pf>")
    assert built.get_boundary() == "=_" + "b" * 32
    data, _ = email._wire(built, international=False)
    parsed = message_from_bytes(data, policy=policy.default)
    parts = [p.get_content().strip() for p in parsed.iter_parts()]  # type: ignore[attr-defined]
    assert parts == [body, "<p>hi</p>"]
