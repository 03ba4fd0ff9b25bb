"""Security (issue #6): invitation tokens, what email can carry, TLS, and secrets in logs.

- Tokens: made from a key out of `secrets` (>= 128 bits), compared in constant time,
  kept only as a hash, single-use, void once replaced or expired; 10,000 guesses, none
  accepted; the customer's side cannot be driven by a partner's actor, nor the reverse.
- Email: hostile names (CR/LF, markup, RFC 2047 encoded words) cannot add headers,
  recipients or HTML to what the real SMTP sink receives; reasons cannot smuggle SMTP.
- STARTTLS is used (and the certificate checked) when configured.
- A whole lifecycle, configured from settings with an SMTP password and a token key,
  logs neither a token, a link with one, the password nor the key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import html
import io
import logging
import random
import re
import secrets
import smtplib
import ssl
import string
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from temporalio import activity, workflow
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

import partnerflow.activities.capabilities as relationship_activities
from partnerflow.activities.capabilities import TOKEN_BYTES, Capabilities, link_token
from partnerflow.activities.email import Letter, Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink, text_of
from partnerflow.runtime import logs
from partnerflow.runtime.config import load
from partnerflow.states.messages import SendLetter
from partnerflow.states.models import Cloud
from partnerflow.states.tokens import is_live, token_hash
from partnerflow.testing import ADMIN, KIT_KEYS, LINK_BASE, TOKEN_IN_LINK, Harness, actor, client_for, free_port, poll
from partnerflow.worker import build_activities, new_worker

pytestmark = pytest.mark.usefixtures("partnerflow_garbage_collected")
URLSAFE = string.ascii_letters + string.digits + "-_"


def accept(token: str, **extra: Any) -> dict[str, Any]:
    return {"token": token, "customer_admin": ADMIN, "accept_agreement": True, **extra}


async def rejected(harness: Harness, handle: WorkflowHandle[Any, Any], name: str, payload: Any) -> ApplicationError:
    """Send an update that must be refused; check it changed nothing; return why."""
    view, size = await harness.view(handle), await harness.history_size(handle)
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await harness.update(handle, name, payload)
    assert await harness.view(handle) == view, f"a refused {name} changed the relationship"
    assert await harness.history_size(handle) == size, f"a refused {name} wrote history"
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


def decoded_length(token: str) -> int:
    """How many random bytes a url-safe base64 token carries."""
    return len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


# --- 1. invitation tokens -------------------------------------------------------------


async def test_tokens_are_made_from_at_least_128_bits_out_of_secrets(
    partnerflow_records: Records, partnerflow_mail: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no key configured the worker draws one from `secrets`; each mailed token is an
    HMAC under it: 256 bits, different for every invitation, and nothing else makes it."""
    assert TOKEN_BYTES * 8 >= 128
    drawn: list[bytes] = []
    real = secrets.token_bytes

    def spy(n: int | None = None) -> bytes:
        value = real(n)
        drawn.append(value)
        return value

    monkeypatch.setattr(relationship_activities.secrets, "token_bytes", spy)
    acts = Capabilities(partnerflow_records, Mailer(SmtpSettings(port=partnerflow_mail.port)), LINK_BASE)
    assert [len(k) for k in drawn] == [TOKEN_BYTES], "the token key comes from secrets.token_bytes"
    [key] = drawn

    keys = [f"relationship/p-1/c-1/run-{n}/1/invitation" for n in range(3)]
    for invite_key in keys:
        invite = SendLetter(
            key=invite_key,
            lifecycle="relationship",
            letter="invitation",
            token=True,
            workflow_id="relationship/p-1/c-1",
            to="admin@contoso.example",
            partner_name="Fabrikam",
            company="Contoso",
            expires_at=datetime.now(UTC) + timedelta(days=30),
        )
        await ActivityEnvironment().run(acts.send_letter, invite)
    tokens = [t for m in partnerflow_mail.messages() for t in TOKEN_IN_LINK.findall(text_of(m))]
    assert tokens == [link_token(key, k) for k in keys], "each token is the HMAC of its invitation"
    assert len(set(tokens)) == 3
    for token in tokens:
        assert set(token) <= set(URLSAFE)
        assert decoded_length(token) * 8 >= 128 and decoded_length(token) == 32
    other = link_token(secrets.token_bytes(TOKEN_BYTES), keys[0])
    assert other not in tokens, "without the key, the invitation's id does not give its token"


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check goes through `hmac.compare_digest` on SHA-256 digests, never `==` on tokens;
    and a token stops working the moment it expires."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token = secrets.token_urlsafe(32)
    expires = datetime(2026, 12, 1, tzinfo=UTC)
    for now, guess, valid in [
        (expires - timedelta(seconds=1), token, True),
        (expires - timedelta(seconds=1), token[:-1] + ("A" if token[-1] != "A" else "B"), False),
        (expires - timedelta(seconds=1), secrets.token_urlsafe(32), False),
    ]:
        calls.clear()
        assert is_live(guess, token_hash(token), expires, now) is valid
        assert calls == [(token_hash(guess), token_hash(token))], "one constant-time comparison of digests"
    for now in (expires, expires + timedelta(days=1)):
        assert is_live(token, token_hash(token), expires, now) is False, "an expired token never works"


@pytest.mark.server
async def test_ten_thousand_guessed_tokens_are_all_refused(
    partnerflow: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 guesses through the validator's own decision, 600 through the workflow
    (updates and the page's lookup): none accepted, nothing changed; the real token works."""
    compared: list[int] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    handle = await partnerflow.start()
    view = await partnerflow.wait_for_state(handle, "invited")
    token = partnerflow.token()
    assert decoded_length(token) == 32
    [entry] = partnerflow.records.outbox_for(handle.id)
    stored = entry.token_sha256
    assert stored == token_hash(token) and token not in stored
    run_id = (await handle.describe()).run_id
    invite_key = f"{handle.id}/{run_id}/1/invitation"

    rng = random.Random(6)  # a fixed seed: the same guesses on every run
    near = [token[:i] + c + token[i + 1 :] for i in range(len(token)) for c in URLSAFE if c != token[i]]
    near += [token[:i] for i in range(1, len(token))] + [token[i:] for i in range(1, len(token))]
    near += [token + c for c in URLSAFE] + [token.swapcase(), token + "=", token[::-1]]
    other_keys = [link_token(secrets.token_bytes(TOKEN_BYTES), invite_key) for _ in range(300)]
    guesses = near + other_keys
    guesses += [secrets.token_urlsafe(TOKEN_BYTES) for _ in range(10_000 - len(guesses))]
    assert len(guesses) == 10_000 and token not in guesses

    def opens(guess: str) -> bool:
        return is_live(guess, stored, view.invitation_expires_at, view.audit[0].at)

    compared.clear()
    assert sum(opens(g) for g in guesses) == 0
    assert len(compared) == 10_000, "each guess was one constant-time comparison"
    assert opens(token)

    sample = rng.sample(near, 100) + rng.sample(other_keys, 100) + rng.sample(guesses[-5_000:], 100)
    size = await partnerflow.history_size(handle)
    limit = asyncio.Semaphore(25)

    async def guess_update(guess: str) -> str:
        async with limit:
            try:
                await handle.execute_update("accept_invitation", accept(guess))
            except WorkflowUpdateFailedError as error:
                assert isinstance(error.cause, ApplicationError)
                return error.cause.type or ""
            return "ACCEPTED"

    async def guess_lookup(guess: str) -> str:
        async with limit:
            found = await handle.query("invitation", {"token": guess})
            return str(found["status"])

    compared.clear()
    outcomes = await asyncio.gather(*(guess_update(g) for g in sample))
    assert set(outcomes) == {"GuardFailed"}, "every guessed update was refused by the token guard"
    lookups = await asyncio.gather(*(guess_lookup(g) for g in sample))
    assert set(lookups) == {"unknown"}, "a guess learns nothing about the relationship"
    assert len(compared) >= 600, "the workflow compares tokens in constant time too"

    after = await partnerflow.view(handle)
    assert (after.state, len(after.audit)) == ("invited", 1)
    assert await partnerflow.history_size(handle) == size and len(partnerflow.records.audit_trail(handle.id)) == 1
    assert (await handle.query("invitation", {"token": token}))["status"] == "valid"
    assert (await partnerflow.update(handle, "accept_invitation", accept(token))).state == "active"


@pytest.mark.server
async def test_a_token_works_once_even_when_the_relationship_is_invited_again(partnerflow: Harness) -> None:
    """Used is void: after end and reinstate, the first link neither accepts nor declines."""
    handle = await partnerflow.bring_to("invited")
    first = partnerflow.token()
    await partnerflow.update(handle, "accept_invitation", accept(first))
    await partnerflow.update(handle, "end_relationship", {"actor": actor()})
    await partnerflow.update(handle, "reinstate", {"actor": actor()})
    second = partnerflow.token()
    assert second != first
    assert (await rejected(partnerflow, handle, "accept_invitation", accept(first))).type == "GuardFailed"
    decline = {"token": first, "customer_admin": ADMIN}
    assert (await rejected(partnerflow, handle, "decline_invitation", decline)).type == "GuardFailed"
    assert (await handle.query("invitation", {"token": first}))["status"] == "accepted"
    view = await partnerflow.update(handle, "accept_invitation", accept(second))
    assert (view.state, view.reinstated_count) == ("active", 1)


@pytest.mark.server
async def test_two_answers_racing_with_one_token_only_one_lands(partnerflow: Harness) -> None:
    """An accept and a decline sent together with the live token: exactly one takes effect."""
    handle = await partnerflow.bring_to("invited")
    token = partnerflow.token()
    results = await asyncio.gather(
        partnerflow.update(handle, "accept_invitation", accept(token)),
        partnerflow.update(handle, "decline_invitation", {"token": token, "customer_admin": ADMIN}),
        return_exceptions=True,
    )
    landed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(landed) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], WorkflowUpdateFailedError)
    view = await partnerflow.view(handle)
    assert view.state in ("active", "declined") and view.state == landed[0].state
    assert [r["to_state"] for r in partnerflow.records.audit_trail(handle.id)] == ["invited", view.state]


@pytest.mark.server
async def test_replaced_and_expired_tokens_stay_void(partnerflow: Harness) -> None:
    """A resend voids the old link; an expired link is refused, and stays refused after a new invitation."""
    handle = await partnerflow.start(timers={"invitation_ttl": "PT1H", "reminders_before": []})
    await partnerflow.wait_for_state(handle, "invited")
    first = partnerflow.token()
    await partnerflow.update(handle, "resend_invitation", {"actor": actor()})
    second = partnerflow.token()
    assert (await rejected(partnerflow, handle, "accept_invitation", accept(first))).type == "GuardFailed"
    assert (await handle.query("invitation", {"token": first}))["status"] == "replaced"

    await partnerflow.env.sleep(timedelta(hours=2))
    assert (await partnerflow.view(handle)).state == "invitation_expired"
    assert (await rejected(partnerflow, handle, "accept_invitation", accept(second))).type == "TransitionNotAllowed"
    assert (await handle.query("invitation", {"token": second}))["status"] == "expired"

    await partnerflow.update(handle, "resend_invitation", {"actor": actor()})
    third = partnerflow.token()
    for old in (first, second):
        assert (await rejected(partnerflow, handle, "accept_invitation", accept(old))).type == "GuardFailed"
    assert (await partnerflow.update(handle, "accept_invitation", accept(third))).state == "active"


def _ca(customer_id: str) -> dict[str, str]:
    return {**ADMIN, "customer_id": customer_id}


SIDES = [
    # (state, update, payload for the customer id, error type, text the refusal must contain)
    pytest.param(
        "invited",
        "accept_invitation",
        lambda c: {"actor": actor("global_admin")},
        "InvalidInput",
        "token: Field required",
        id="partner-accepts-without-token",
    ),
    pytest.param(
        "invited",
        "accept_invitation",
        lambda c: {"actor": actor("global_admin"), "accept_agreement": True},
        "InvalidInput",
        "customer_admin: Field required",
        id="partner-accepts-as-itself",
    ),
    pytest.param(
        "invited",
        "accept_invitation",
        lambda c: accept("x" * 43, actor=actor("global_admin")),
        "GuardFailed",
        "token must be the live invitation token",
        id="partner-accepts-with-a-guess",
    ),
    pytest.param(
        "invited",
        "decline_invitation",
        lambda c: {"actor": actor("global_admin"), "reason": "no"},
        "InvalidInput",
        "token: Field required",
        id="partner-declines",
    ),
    pytest.param(
        "active",
        "remove_partner",
        lambda c: {"actor": actor("global_admin")},
        "InvalidInput",
        "customer_admin: Field required",
        id="partner-removes-itself-as-customer",
    ),
    pytest.param(
        "active",
        "remove_partner",
        lambda c: {"actor": actor(), "customer_admin": ADMIN},
        "InvalidInput",
        "customer_admin.customer_id: Field required",
        id="customer-admin-without-customer",
    ),
    pytest.param(
        "invited", "resend_invitation", lambda c: {}, "InvalidInput", "actor: Field required", id="resend-by-nobody"
    ),
    pytest.param(
        "invited",
        "cancel_invitation",
        lambda c: {"customer_admin": ADMIN, "token": "t"},
        "InvalidInput",
        "actor: Field required",
        id="customer-cancels",
    ),
    pytest.param(
        "active",
        "end_relationship",
        lambda c: {"customer_admin": _ca(c)},
        "InvalidInput",
        "actor: Field required",
        id="customer-ends-as-partner",
    ),
    pytest.param(
        "active",
        "set_purchase_permission",
        lambda c: {"customer_admin": _ca(c), "allowed": True},
        "InvalidInput",
        "actor: Field required",
        id="customer-grants-itself-purchase",
    ),
    pytest.param(
        "ended",
        "reinstate",
        lambda c: {"customer_admin": _ca(c)},
        "InvalidInput",
        "actor: Field required",
        id="customer-reinstates",
    ),
]


@pytest.mark.server
@pytest.mark.parametrize(("state", "name", "payload", "error_type", "text"), SIDES)
async def test_neither_side_can_act_for_the_other(
    partnerflow: Harness, state: str, name: str, payload: Callable[[str], Any], error_type: str, text: str
) -> None:
    """Customer updates take no partner actor (only the token or the portal's admin speaks);
    partner updates need one: a customer admin in its place is refused."""
    handle = await partnerflow.bring_to(state)
    error = await rejected(partnerflow, handle, name, payload(handle.id.split("/")[-1]))
    assert (error.type, text in error.message) == (error_type, True), error.message


# --- 2. what email can carry ------------------------------------------------------------

ALLOWED_HEADERS = {
    "from",
    "to",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-language",
    "x-peer",  # added by the sink
    "x-mailfrom",
    "x-rcptto",
}


def received(maildir: Path) -> list[EmailMessage]:
    """Every message file in the sink, parsed as a mail client would."""
    files = sorted((maildir / "new").iterdir(), key=lambda f: f.stat().st_mtime_ns)
    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(f.read_bytes()) for f in files]  # type: ignore[misc]


def one_line(text: str) -> str:
    return " ".join(text.split())


def body(message: EmailMessage, subtype: str = "plain") -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


def seen(text: str) -> str:
    """As a reader sees it: the word joiners that keep a name from becoming a link are invisible."""
    return text.replace("\u2060", "")


def assert_plain_and_closed(message: EmailMessage, recipient: str, shown: list[str]) -> None:
    """Only partnerflow's headers, once each; one recipient; a text part and an HTML part and
    nothing else; names shown literally in the text, escaped in the HTML, never as markup."""
    names = [k.lower() for k in message]
    assert set(names) <= ALLOWED_HEADERS, f"extra headers: {set(names) - ALLOWED_HEADERS}"
    assert len(names) == len(set(names)), f"a header appears twice: {names}"
    assert message["To"] == recipient and message["X-RcptTo"] == recipient, "one recipient, the intended one"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    for text in shown:
        subject = seen(one_line(str(message["Subject"])))
        assert one_line(text) in subject, f"the subject does not show {text!r} literally"
        assert text in seen(body(message)), f"the text part does not show {text!r} literally"
        assert text in html.unescape(seen(body(message, "html"))), f"the HTML part does not show {text!r}"
        assert "<script" not in body(message, "html") and "<a href='http" not in body(message, "html")


def encoded_word(raw: str, q: bool = False) -> str:
    if q:
        return "=?utf-8?q?" + "".join(f"={b:02X}" for b in raw.encode()) + "?="
    return "=?utf-8?b?" + base64.b64encode(raw.encode()).decode() + "?="


HOSTILE_NAMES = [
    pytest.param("customer.company", "Contoso\r\nBcc: evil@x.example", id="company-crlf-bcc"),
    pytest.param("partner.name", "Fabrikam\nCc: evil@x.example", id="partner-lf-cc"),
    pytest.param("customer.company", "Contoso\rContent-Type: text/html", id="company-cr-content-type"),
    pytest.param("customer.company", "<script>alert('pwned')</script>", id="company-script"),
    pytest.param("partner.name", "<b>Fabrikam</b> <a href='http://evil.example/verify'>verify</a>", id="partner-html"),
    pytest.param("customer.company", "Contoso Bcc: evil@x.example", id="company-inline-bcc"),
    pytest.param("customer.company", "Contoso\u2028Bcc: evil@x.example", id="company-line-separator-bcc"),
    pytest.param("partner.name", "Fabrikam\x85Cc: evil@x.example", id="partner-next-line-cc"),
    pytest.param("customer.company", encoded_word("\r\nBcc: evil@x.example"), id="company-encoded-word-bcc"),
    pytest.param("partner.name", encoded_word("Fabrikam\r\nCc: evil@x.example", q=True), id="partner-encoded-word-cc"),
    pytest.param(
        "customer.company",
        encoded_word("\r\nContent-Type: text/html\r\n\r\n<h1>Verify your account</h1>"),
        id="company-encoded-word-html",
    ),
]


@pytest.mark.server
@pytest.mark.parametrize(("where", "name"), HOSTILE_NAMES)
async def test_hostile_names_cannot_inject_headers_or_markup(partnerflow: Harness, where: str, name: str) -> None:
    """Refused at the start naming the field, or mailed as plain text that shows the name
    literally: no extra header, recipient, Bcc or Cc, no HTML part, in any email sent."""
    part, field = where.split(".")
    handle = await partnerflow.start(**{part: {field: name}})

    async def outcome() -> str | None:
        # No query here: a start that is being refused answers none until it has failed.
        if (await handle.describe()).status == WorkflowExecutionStatus.FAILED:
            return "refused"
        return "started" if partnerflow.records.audit_trail(handle.id) else None

    if await poll(outcome) == "refused":
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        assert f"{where}: " in str(caught.value.cause)
        assert partnerflow.mail() == []
        return
    company = name if where == "customer.company" else "Contoso Ltd"
    partner = name if where == "partner.name" else "Fabrikam"
    await partnerflow.letters_sent()
    [invitation] = received(partnerflow.sink.maildir)
    assert_plain_and_closed(invitation, "admin@contoso.example", [name])
    assert body(invitation).count("token=") == 1
    assert seen(one_line(str(invitation["Subject"]))) == one_line(
        f"{partner} invites {company} to a reseller relationship"
    )

    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    _, notice = received(partnerflow.sink.maildir)
    assert_plain_and_closed(notice, "sam@fabrikam.example", [company])


@pytest.mark.server
async def test_a_reason_cannot_smuggle_smtp_commands(partnerflow: Harness) -> None:
    """A reason with a lone dot line and SMTP commands goes in the notice's body, nowhere else."""
    handle = await partnerflow.bring_to("active")
    reason = (
        "moving on\r\n.\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@x.example>\r\nDATA\r\n"
        "Subject: smuggled\r\n\r\nhi\r\n.\r\n\n.\nRCPT TO:<victim2@x.example>"
    )
    await partnerflow.update(handle, "end_relationship", {"actor": actor(), "reason": reason})
    messages = received(partnerflow.sink.maildir)
    assert [m["X-RcptTo"] for m in messages] == [
        "admin@contoso.example",  # the invitation
        "sam@fabrikam.example",  # accepted
        "admin@contoso.example",  # ended
    ]
    ended = messages[-1]
    assert_plain_and_closed(ended, "admin@contoso.example", [])
    assert "MAIL FROM:<evil@x.example>" in seen(body(ended)) and "smuggled" in body(ended)
    assert all(m["Subject"] != "smuggled" for m in messages)


# --- 3. STARTTLS ----------------------------------------------------------------------

SMTP_USER = "partnerflow"
LETTER = Letter(to="admin@contoso.example", subject="TLS check", body="Hello over TLS.\n")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the `openssl` command; no Python package needed)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@dataclass
class Delivery:
    recipients: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool


class RecordingMailbox(Mailbox):
    """Keeps each message in a Maildir (as the sink does) and notes how it arrived."""

    def __init__(self, maildir: Path) -> None:
        super().__init__(maildir)
        self.deliveries: list[Delivery] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.deliveries.append(
            Delivery(
                recipients=list(envelope.rcpt_tos),
                message=BytesParser(policy=policy.default).parsebytes(raw),  # type: ignore[arg-type]
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
            )
        )
        result: str = await super().handle_DATA(server, session, envelope)
        return result


class TlsMailServer:
    """A real SMTP server that requires STARTTLS (self-signed certificate) and a login over it."""

    def __init__(self, maildir: Path, certificate: tuple[Path, Path], password: str) -> None:
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        self.maildir = maildir
        self.password = password
        self.logins: list[bool] = []  # each AUTH attempt, and whether it was over TLS
        self.handler = RecordingMailbox(maildir)
        self.port = free_port()
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            auth_require_tls=True,
            auth_required=True,
            authenticator=self._authenticate,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.logins.append(session.ssl is not None)
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == self.password.encode()
        )
        return AuthResult(success=ok, handled=False)

    @property
    def deliveries(self) -> list[Delivery]:
        return self.handler.deliveries

    def __enter__(self) -> TlsMailServer:
        self._controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._controller.stop()


async def test_the_mailer_uses_starttls_and_logs_in_over_it(
    certificate: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test's own CA
    password = secrets.token_urlsafe(16)
    with TlsMailServer(tmp_path / "mail", certificate, password) as server:
        mailer = Mailer(SmtpSettings(port=server.port, starttls=True, username=SMTP_USER, password=password))
        await mailer.send(mailer.build(LETTER, "<tls-1@partnerflow>"))
    [delivery] = server.deliveries
    assert delivery.tls and delivery.authenticated and server.logins == [True]
    assert delivery.recipients == ["admin@contoso.example"]
    assert delivery.message["Message-ID"] == "<tls-1@partnerflow>"


async def test_without_starttls_a_server_that_requires_it_takes_nothing(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    with TlsMailServer(tmp_path / "mail", certificate, "unused") as server:
        mailer = Mailer(SmtpSettings(port=server.port, starttls=False))
        with pytest.raises(smtplib.SMTPException) as caught:
            await mailer.send(mailer.build(LETTER, "<tls-2@partnerflow>"))
    assert "530" in str(caught.value), "refused for want of STARTTLS"
    assert server.deliveries == []


async def test_an_untrusted_certificate_stops_the_mail_before_the_password(
    certificate: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate is checked: no fallback to plain text, and the password is never sent."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    password = secrets.token_urlsafe(16)
    with TlsMailServer(tmp_path / "mail", certificate, password) as server:
        mailer = Mailer(SmtpSettings(port=server.port, starttls=True, username=SMTP_USER, password=password))
        with pytest.raises(ssl.SSLError) as caught:
            await mailer.send(mailer.build(LETTER, "<tls-3@partnerflow>"))
    assert password not in str(caught.value)
    assert server.deliveries == [] and server.logins == []


# --- 4. no secrets in logs ------------------------------------------------------------


@contextlib.contextmanager
def partnerflow_logging(stream: io.StringIO, fmt: str, level: str) -> Iterator[None]:
    """Logging as the worker configures it (`runtime.logs`), into `stream`; undone after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, structlog.get_config())
    quiet = ("transitions", "aiosmtpd", "mail.log", "asyncio", "alembic")
    levels = {name: logging.getLogger(name).level for name in quiet}
    info = (workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message)
    logs.configure(fmt, level)
    # Loggers made now must not stay bound to this configuration (other tests capture structlog).
    structlog.configure(cache_logger_on_first_use=False)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
    try:
        yield
    finally:
        handlers, level_before, config = saved
        root.handlers[:] = handlers
        root.setLevel(level_before)
        structlog.configure(**config)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
        workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message = info


@pytest.mark.server
async def test_a_whole_life_logs_no_token_no_password_no_key(
    partnerflow_time_env: WorkflowEnvironment,
    certificate: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Invite, resend, a refused answer, accept, end: DEBUG logs of the worker (ours, the
    SDK's, its core's), configured from settings with an SMTP password and a token key,
    hold no token, no link with one, no password and no key; nor does the records file."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    password = "pw-" + secrets.token_urlsafe(16)
    token_key = "key-" + secrets.token_urlsafe(32)
    maildir = tmp_path / "mail"
    stream = io.StringIO()
    with TlsMailServer(maildir, certificate, password) as server, partnerflow_logging(stream, "json", "DEBUG"):
        settings = load(
            tmp_path / "absent.yml",
            {
                "PARTNERFLOW_SMTP__PORT": str(server.port),
                "PARTNERFLOW_SMTP__STARTTLS": "true",
                "PARTNERFLOW_SMTP__USERNAME": SMTP_USER,
                "PARTNERFLOW_SMTP__PASSWORD": password,
                "PARTNERFLOW_INVITATION__TOKEN_KEY": token_key,
                "PARTNERFLOW_INVITATION__LINK_BASE_URL": LINK_BASE,
                "PARTNERFLOW_RECORDS__URL": f"sqlite:///{tmp_path / 'records.db'}",
                "PARTNERFLOW_TEMPORAL__CLOUDS": "[public]",
                "PARTNERFLOW_LOG__FORMAT": "json",
                "PARTNERFLOW_LOG__LEVEL": "DEBUG",
                **KIT_KEYS.issuers_env(tmp_path),
            },
        )
        acts = build_activities(settings)[Cloud.PUBLIC]
        client = client_for(partnerflow_time_env)
        task_queue = f"tq-{uuid.uuid4()}"
        async with new_worker(client, acts, task_queue):
            harness = Harness(
                partnerflow_time_env, client, MailSink(maildir, port=server.port), acts.records, task_queue
            )
            handle = await harness.start()
            try:
                await harness.wait_for_state(handle, "invited")
                await harness.update(handle, "resend_invitation", {"actor": actor()})
                live = harness.token()
                await rejected(harness, handle, "accept_invitation", accept(live, accept_agreement=False))
                await harness.update(handle, "accept_invitation", accept(live))
                await harness.update(handle, "end_relationship", {"actor": actor(), "reason": "done"})
            finally:
                await handle.terminate("test finished")
            history = (await handle.fetch_history()).to_json()
        acts.records.dispose()
    captured = capfd.readouterr()
    text = stream.getvalue() + captured.out + captured.err

    tokens = harness.tokens()
    assert len(tokens) == 2 and all(d.tls and d.authenticated for d in server.deliveries)
    lines = stream.getvalue().splitlines()
    assert any('"email.sent"' in line for line in lines) and any("relationship.transition" in line for line in lines)
    plain_auth = base64.b64encode(f"\0{SMTP_USER}\0{password}".encode()).decode()
    for secret, what in [(password, "SMTP password"), (plain_auth, "SMTP AUTH"), (token_key, "token key")]:
        assert secret not in text, f"the {what} is in the logs"
    for token in tokens:
        assert token not in text, "a token is in the logs"
        assert f"token={token}" not in text, "an invitation link is in the logs"
    assert tokens[0] not in history, "a token that was never used is in the workflow history"
    for db_file in tmp_path.glob("records.db*"):
        content = db_file.read_bytes()
        for secret in [*tokens, password, token_key]:
            assert secret.encode() not in content, f"{db_file.name} holds a secret"
    # The configured key made the tokens (so every worker sharing it makes the same ones).
    run_id = (await handle.describe()).run_id
    keys = [f"{handle.id}/{run_id}/{seq}/invitation" for seq in (1, 2)]
    assert tokens == [link_token(token_key.encode(), k) for k in keys]
    assert re.search(r"\bworker\.no_token_key\b", text) is None
