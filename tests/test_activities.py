"""Activities against a real SMTP server (the sink) and a real SQLite database.

Each is run twice where Temporal could retry it: nothing may be sent or written twice.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from smtplib import SMTPException

import pytest
import sqlalchemy as sa
import structlog
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from partnerflow.activities.capabilities import Capabilities, link_token
from partnerflow.activities.email import Letter, Mailer, SmtpSettings
from partnerflow.activities.records import Records, outbox
from partnerflow.mailsink import MailSink, text_of
from partnerflow.states.messages import (
    ADMIT,
    DEAD_LETTER,
    DELIVER_EVENT,
    NEXT_EVENTS,
    RECORD_AND_FIND,
    RECORD_WITH_LINK,
    RELATED,
    Change,
    Counted,
    ReadFact,
    SendLetter,
    read_fact,
    send_link,
)
from partnerflow.states.tokens import token_hash
from partnerflow.testing import LINK_BASE, TOKEN_IN_LINK, free_port

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def change(seq: int, to_state: str = "invited", **kw: object) -> Change:
    values: dict[str, object] = dict(
        change_id=f"relationship/p-1/c-1/run/{seq}",
        cloud="public",
        partner_id="p-1",
        customer_id="c-1",
        workflow_id="relationship/p-1/c-1",
        company="Contoso",
        operation="CreateCustomerInvitation",
        actor_user="sam@p.example",
        actor_role="sales_agent",
        from_state=None,
        to_state=to_state,
        fields={"purchase_permission": False, "reinstated_count": 0},
        at=NOW + timedelta(minutes=seq),
    )
    values.update(kw)
    return Change.model_validate(values)


def invitation(key: str = "relationship/p-1/c-1/run/1/invitation") -> SendLetter:
    return SendLetter(
        key=key,
        lifecycle="relationship",
        letter="invitation",
        token=True,
        workflow_id="relationship/p-1/c-1",
        to="admin@contoso.example",
        partner_name="Fabrikam",
        company="Contoso",
        expires_at=NOW + timedelta(days=30),
    )


@pytest.fixture
def acts(partnerflow_records: Records, partnerflow_mail: MailSink) -> Capabilities:
    return Capabilities(partnerflow_records, Mailer(SmtpSettings(port=partnerflow_mail.port)), LINK_BASE)


async def test_a_change_recorded_twice_is_one_audit_row(acts: Capabilities, partnerflow_records: Records) -> None:
    env = ActivityEnvironment()
    assert await env.run(acts.record_change, change(1)) is True
    assert await env.run(acts.record_change, change(1)) is False
    assert len(partnerflow_records.audit_trail("relationship/p-1/c-1")) == 1
    row = partnerflow_records.customer("public", "p-1", "c-1")
    assert row and row["version"] == 1 and row["state"] == "invited"


async def test_a_change_and_its_lookup_answer_together_or_record_nothing(
    acts: Capabilities, partnerflow_records: Records
) -> None:
    """`record_change_and_find` (a cascading row's change, v8 on): the change recorded and the
    customer's open lifecycles it reaches; a lifecycle the worker does not declare is refused
    before anything is written."""
    with pytest.raises(ApplicationError, match="find: no_such_lifecycle is not a declared lifecycle"):
        await acts.record_change_and_find(change(1).model_copy(update={"find": ["no_such_lifecycle"]}))
    assert partnerflow_records.audit_trail("relationship/p-1/c-1") == []
    answer = await acts.record_change_and_find(change(1).model_copy(update={"find": ["delegated_admin"]}))
    assert (answer.recorded, answer.related) == (True, {"delegated_admin": []})
    assert len(partnerflow_records.audit_trail("relationship/p-1/c-1")) == 1


async def test_each_change_bumps_the_customer_rows_version(partnerflow_records: Records) -> None:
    partnerflow_records.apply_change(change(1))
    partnerflow_records.apply_change(change(2, "active", operation="AddCustomer", from_state="invited"))
    partnerflow_records.apply_change(
        change(
            3, "active", operation="CreateSelfServePolicy", fields={"purchase_permission": True, "reinstated_count": 0}
        )
    )
    row = partnerflow_records.customer("public", "p-1", "c-1")
    assert row is not None
    assert (row["version"], row["state"], row["purchase_permission"]) == (3, "active", True)
    assert [r["operation"] for r in partnerflow_records.audit_trail("relationship/p-1/c-1")] == [
        "CreateCustomerInvitation",
        "AddCustomer",
        "CreateSelfServePolicy",
    ]
    assert [r["customer_id"] for r in partnerflow_records.customer_list("public", "p-1")] == ["c-1"]
    assert partnerflow_records.customer_list("usgov", "p-1") == []


async def test_subscriptions_are_counted_per_cloud_partner_customer(
    acts: Capabilities, partnerflow_records: Records
) -> None:
    detail = {"Azure plan": 2, "Microsoft 365 E3": 1}
    partnerflow_records.set_active_subscriptions("public", "p-1", "c-1", 3, now=NOW, detail=detail)
    key = ReadFact(fact="active_subscriptions", cloud="public", partner_id="p-1", customer_id="c-1")
    assert await ActivityEnvironment().run(acts.read_fact, key) == Counted(count=3, detail=detail)
    other = ReadFact(fact="active_subscriptions", cloud="usgov", partner_id="p-1", customer_id="c-1")
    assert await ActivityEnvironment().run(acts.read_fact, other) == Counted(count=0)
    with pytest.raises(ValueError):
        partnerflow_records.set_active_subscriptions("public", "p-1", "c-1", -1, now=NOW)
    with pytest.raises(ValueError, match="detail: its counts must add up"):
        partnerflow_records.set_active_subscriptions("public", "p-1", "c-1", 4, now=NOW, detail=detail)
    assert partnerflow_records.active_subscriptions("public", "p-1", "c-1").count == 3  # nothing changed


async def test_an_invitation_retried_is_sent_once_with_one_token(
    acts: Capabilities, partnerflow_records: Records, partnerflow_mail: MailSink
) -> None:
    env = ActivityEnvironment()
    first = await env.run(acts.send_letter, invitation())
    again = await env.run(acts.send_letter, invitation())
    [message] = partnerflow_mail.messages()
    [token] = TOKEN_IN_LINK.findall(text_of(message))
    assert first == again and first.token_sha256 == token_hash(token)
    assert f"{LINK_BASE}/invitation?relationship=relationship%2Fp-1%2Fc-1&token={token}" in text_of(message)
    assert len(token) >= 43  # 256 bits, url-safe base64


async def test_an_attempt_that_died_mid_send_leaves_one_live_token(
    acts: Capabilities, partnerflow_records: Records, partnerflow_mail: MailSink, tmp_path: Path
) -> None:
    """SMTP down: the attempt fails, the outbox row stays pending; the retry sends the same token."""
    key = secrets.token_bytes(32)
    down = Capabilities(
        partnerflow_records, Mailer(SmtpSettings(port=free_port(), timeout_s=2)), LINK_BASE, token_key=key
    )
    with pytest.raises((SMTPException, OSError)):
        await ActivityEnvironment().run(down.send_letter, invitation())
    entry = partnerflow_records.outbox_entry(invitation().key)
    assert entry and entry.status == "pending"

    up = Capabilities(partnerflow_records, acts.mailer, LINK_BASE, token_key=key)  # another worker, the same key
    issued = await ActivityEnvironment().run(up.send_letter, invitation())
    [message] = partnerflow_mail.messages()
    [token] = TOKEN_IN_LINK.findall(text_of(message))
    assert issued.token_sha256 == token_hash(token) == token_hash(link_token(key, invitation().key))
    entry = partnerflow_records.outbox_entry(invitation().key)
    assert entry and (entry.status, entry.attempts) == ("sent", 2)


async def test_a_retry_after_the_server_took_the_message_sends_the_very_same_one(
    partnerflow_records: Records, partnerflow_mail: MailSink
) -> None:
    """The worker died after the SMTP server took the invitation, before the outbox said so:
    the retry (on a worker with the same key) mails the identical message, same link and
    Message-ID, so a mailbox folds them into one; never a second, different link."""
    key = secrets.token_bytes(32)
    acts = Capabilities(partnerflow_records, Mailer(SmtpSettings(port=partnerflow_mail.port)), LINK_BASE, token_key=key)
    first = await ActivityEnvironment().run(acts.send_letter, invitation())
    with partnerflow_records.engine.begin() as conn:  # as if the worker had died before marking it sent
        conn.execute(sa.update(outbox).values(status="pending"))
    again = await ActivityEnvironment().run(acts.send_letter, invitation())
    one, two = partnerflow_mail.messages()
    assert first == again
    assert (one["Message-ID"], text_of(one)) == (two["Message-ID"], text_of(two))


def test_tokens_differ_by_invitation_and_by_key() -> None:
    key, other = secrets.token_bytes(32), secrets.token_bytes(32)
    tokens = {
        link_token(key, "relationship/p-1/c-1/run-a/1/invitation"),
        link_token(key, "relationship/p-1/c-1/run-a/2/invitation"),
        link_token(key, "relationship/p-1/c-1/run-b/1/invitation"),
        link_token(other, "relationship/p-1/c-1/run-a/1/invitation"),
    }
    assert len(tokens) == 4 and all(len(t) == 43 for t in tokens)  # 256 bits, url-safe base64


async def test_notices_are_sent_once_per_key(acts: Capabilities, partnerflow_mail: MailSink) -> None:
    notice = SendLetter(
        key="relationship/p-1/c-1/run/2/partner_accepted",
        lifecycle="relationship",
        letter="partner_accepted",
        workflow_id="relationship/p-1/c-1",
        to="sam@fabrikam.example",
        partner_name="Fabrikam",
        company="Contoso",
    )
    env = ActivityEnvironment()
    first = await env.run(acts.send_letter, notice)
    assert await env.run(acts.send_letter, notice) == first and first.token_sha256 is None
    [message] = partnerflow_mail.messages()
    assert message["Message-ID"] == first.message_id and message["To"] == "sam@fabrikam.example"
    assert message["Subject"] == "Contoso accepted your reseller relationship"


async def test_the_token_is_never_logged_or_stored(
    acts: Capabilities, partnerflow_records: Records, partnerflow_mail: MailSink, tmp_path: Path
) -> None:
    """Only the email holds the token: not the logs, not the database file."""
    with structlog.testing.capture_logs() as logs:
        await ActivityEnvironment().run(acts.send_letter, invitation())
    [token] = TOKEN_IN_LINK.findall(text_of(partnerflow_mail.messages()[0]))
    assert logs and token not in repr(logs)
    partnerflow_records.dispose()
    for db_file in tmp_path.glob("records.db*"):
        assert token.encode() not in db_file.read_bytes()


def test_a_subject_cannot_grow_extra_headers() -> None:
    """CR/LF in a name collapses to one line; the email package refuses raw newlines anyway."""
    mailer = Mailer(SmtpSettings())
    letter = Letter(to="a@b.example", subject="Hi\r\nBcc: everyone@example.com", body="x")
    message = mailer.build(letter, "<id@partnerflow>")
    assert message["Subject"] == "Hi Bcc: everyone@example.com"
    assert message["Bcc"] is None
    with pytest.raises(ValueError):
        mailer.build(Letter(to="a@b.example\r\nBcc: x@y.example", subject="s", body="x"), "<id@p>")


async def test_a_letter_scheduled_before_the_engine_is_still_sent(
    acts: Capabilities, partnerflow_mail: MailSink
) -> None:
    """An activity a running relationship scheduled before the deploy (old name, old payload) finds a worker."""
    by_name = {getattr(fn, "__temporal_activity_definition").name: fn for fn in acts.all()}
    assert {
        "send_notice",
        "record_change",
        RECORD_WITH_LINK.name,  # a change with its link letter (v7 on)
        ADMIT.name,
        send_link("invitation").name,
        send_link("approval").name,  # the delegated admin lifecycle's page
        RELATED.name,  # the lifecycles a cascade reaches (runs begun before v8)
        RECORD_AND_FIND.name,  # a change and whom its cascades reach (v8 on)
        read_fact("active_subscriptions").name,
        read_fact("reseller_ended").name,
        read_fact("invitation_answer").name,
        NEXT_EVENTS.name,
        DELIVER_EVENT.name,
        DEAD_LETTER.name,
    } == set(by_name)
    old_invitation = {
        "key": "relationship/p-1/c-1/run/1/invitation",
        "workflow_id": "relationship/p-1/c-1",
        "to": "admin@contoso.example",
        "partner_name": "Fabrikam",
        "company": "Contoso",
        "expires_at": NOW.isoformat(),
        "reinstatement": True,
    }
    issued = await ActivityEnvironment().run(by_name["send_invitation"], SendLetter.model_validate(old_invitation))
    [message] = partnerflow_mail.messages()
    assert issued.token_sha256 and "asks to become the cloud reseller of Contoso again" in text_of(message)


async def test_an_unknown_letter_or_fact_is_refused_not_retried(acts: Capabilities) -> None:
    """A name no declaration has cannot be mended by a retry: the activity fails for good."""

    letter = invitation().model_copy(update={"letter": "no_such_letter"})
    with pytest.raises(ApplicationError, match="no letter no_such_letter") as refused:
        await ActivityEnvironment().run(acts.send_letter, letter)
    assert refused.value.non_retryable
    fact = ReadFact(fact="no_such_fact", cloud="public", partner_id="p-1", customer_id="c-1")
    with pytest.raises(ApplicationError, match="no_such_fact"):
        await ActivityEnvironment().run(acts.read_fact, fact)
