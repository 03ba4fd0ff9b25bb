"""The letter relay on a real database (PostgreSQL and SQLite) and a real SMTP server: a change's
letters are queued in its own transaction and each is sent once, whichever relay takes it,
whatever fails meanwhile."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records, letter_queue, utc_now
from partnerflow.activities.relay import CLAIM, LAST_WAIT, wait_after
from partnerflow.mailsink import MailSink, text_of
from partnerflow.states.messages import SendLetter
from partnerflow.states.tokens import token_hash
from partnerflow.testing import TOKEN_IN_LINK, free_port
from tests.test_records_postgres import change


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail", port=free_port()) as s:
        yield s


def letter(customer_id: str, n: int, kind: str = "partner_accepted") -> SendLetter:
    wid = f"relationship/p-1/{customer_id}"
    return SendLetter(
        key=f"{wid}/run/{n}/{kind}",
        lifecycle="relationship",
        letter=kind,
        workflow_id=wid,
        to="sam@fabrikam.example",
        partner_name="Fabrikam",
        company="Contoso",
    )


def queue(records: Records, customer_id: str, *letters: SendLetter) -> bool:
    return records.apply_change(change(1, customer_id=customer_id, letters=list(letters)))


def capabilities(records: Records, port: int) -> Capabilities:
    return Capabilities(records, Mailer(SmtpSettings(port=port, timeout_s=2, deadline_s=4)), "http://portal.test")


async def test_a_change_queues_its_letters_and_they_go_once(records: Records, sink: MailSink) -> None:
    assert queue(records, "c-1", letter("c-1", 2), letter("c-1", 2, "customer_ended"))
    assert not queue(records, "c-1", letter("c-1", 2))  # the activity's retry: recorded already, nothing queued
    assert records.letters_queued() == 2
    relay = capabilities(records, sink.port).relay
    assert await relay.drain() == 2
    assert records.letters_queued() == 0
    assert sorted(m["Subject"] for m in sink.messages()) == [
        "Contoso accepted your reseller relationship",
        "Fabrikam ended its reseller relationship with Contoso",
    ]
    assert await relay.drain() == 0 and len(sink.messages()) == 2


async def test_two_relays_never_send_one_letter_twice(records: Records, sink: MailSink) -> None:
    for i in range(12):
        queue(records, f"c-{i}", letter(f"c-{i}", 2))
    first, second = capabilities(records, sink.port).relay, capabilities(records, sink.port).relay
    sent = await asyncio.gather(first.drain(), second.drain())
    assert sum(sent) == 12 and records.letters_queued() == 0
    ids = Counter(str(m["Message-ID"]) for m in sink.messages())
    assert len(ids) == 12 and set(ids.values()) == {1}


async def test_a_mail_outage_delays_a_letter_and_never_loses_it(records: Records, sink: MailSink) -> None:
    queue(records, "c-1", letter("c-1", 2))
    down = capabilities(records, free_port()).relay  # nothing listens there
    assert await down.drain() == 0
    assert records.letters_queued() == 1
    assert await down.drain() == 0, "not due again before its wait is over"
    later = utc_now() + wait_after(1) + timedelta(seconds=1)
    [again] = records.letters_claim(None, later, until=later + CLAIM, limit=10)
    assert again.attempts == 2
    assert wait_after(30) == LAST_WAIT  # waits grow, then stay at the last


async def test_a_claim_left_by_a_dead_relay_runs_out_and_another_sends_it(records: Records, sink: MailSink) -> None:
    queue(records, "c-1", letter("c-1", 2))
    now = utc_now()
    assert len(records.letters_claim(None, now, until=now + CLAIM, limit=10)) == 1  # its relay died mid-send
    assert records.letters_claim(None, now, until=now + CLAIM, limit=10) == []
    [taken] = records.letters_claim(None, now + CLAIM, until=now + 2 * CLAIM, limit=10)
    assert taken.key == letter("c-1", 2).key


async def test_erasing_a_customer_drops_its_unsent_letters(records: Records) -> None:
    queue(records, "c-1", letter("c-1", 2))
    queue(records, "c-2", letter("c-2", 2))
    records.erase_customer("public", "p-1", "c-1", now=utc_now())
    assert records.letters_queued("relationship/p-1/c-1") == 0
    assert records.letters_queued("relationship/p-1/c-2") == 1


def link_letter(customer_id: str, n: int) -> SendLetter:
    return letter(customer_id, n, "invitation").model_copy(
        update={"token": True, "to": "admin@contoso.example", "expires_at": utc_now() + timedelta(days=30)}
    )


def to_admin(sink: MailSink) -> list[Any]:
    return [m for m in sink.messages() if m["To"] == "admin@contoso.example"]


def token_in(message: Any) -> str:
    found = TOKEN_IN_LINK.search(text_of(message))
    assert found, "no link in the letter"
    return found.group(1)


async def test_a_link_goes_with_its_change_and_another_workers_relay_sends_the_promised_token(
    records: Records, sink: MailSink
) -> None:
    """Workers that share the token key: the change answers the token's hash before any letter
    goes, and whichever relay sends it, the link in the letter is the one the hash promised."""
    key = secrets.token_bytes(32)
    mailer = Mailer(SmtpSettings(port=sink.port))
    recorder = Capabilities(records, mailer, "http://portal.test", token_key=key)
    sender = Capabilities(records, mailer, "http://portal.test", token_key=key)  # another worker
    invite = change(1, letters=[link_letter("c-1", 1), letter("c-1", 1)])
    issued = await ActivityEnvironment().run(recorder.record_change_with_link, invite)
    assert issued.token_sha256 and records.letters_queued() == 2 and not sink.messages()
    again = await ActivityEnvironment().run(recorder.record_change_with_link, invite)  # a retry
    assert again == issued and records.letters_queued() == 2
    assert await sender.relay.drain() == 2
    [invitation] = to_admin(sink)
    assert token_hash(token_in(invitation)) == issued.token_sha256
    assert str(invitation["Message-ID"]) == issued.message_id
    mailer.close()


async def test_a_worker_with_a_key_of_its_own_sends_the_link_itself(records: Records, sink: MailSink) -> None:
    """No shared key: another worker could not make the same token, so the letter is sent in the
    activity, before the change is recorded; a retry answers the same hash and sends nothing."""
    acts = capabilities(records, sink.port)
    invite = change(1, letters=[link_letter("c-1", 1), letter("c-1", 1)])
    issued = await ActivityEnvironment().run(acts.record_change_with_link, invite)
    [invitation] = to_admin(sink)
    assert token_hash(token_in(invitation)) == issued.token_sha256
    assert records.letters_queued() == 1  # the notice still goes with the change
    assert await ActivityEnvironment().run(acts.record_change_with_link, invite) == issued
    assert len(to_admin(sink)) == 1
    acts.mailer.close()


@pytest.mark.parametrize("links", [0, 2])
async def test_a_change_with_link_carries_exactly_one(records: Records, links: int) -> None:
    acts = capabilities(records, free_port())
    invite = change(1, letters=[link_letter("c-1", n) for n in range(links)])
    with pytest.raises(ApplicationError, match="one link letter") as raised:
        await ActivityEnvironment().run(acts.record_change_with_link, invite)
    assert raised.value.non_retryable and records.current("customers", invite.workflow_id) is None


def keyed(records: Records, port: int, key: bytes) -> Capabilities:
    return Capabilities(
        records, Mailer(SmtpSettings(port=port, timeout_s=2, deadline_s=4)), "http://portal.test", token_key=key
    )


async def test_a_relay_whose_key_differs_never_mails_a_link_the_workflow_does_not_hold(
    records: Records, sink: MailSink
) -> None:
    """Workers whose keys differ (one unset, or a rotation half done): the link promised with
    one key waits for a relay with that key, and the letter mailed is the promised one."""
    key = secrets.token_bytes(32)
    recorder, stranger = keyed(records, sink.port, key), capabilities(records, sink.port)
    issued = await ActivityEnvironment().run(
        recorder.record_change_with_link, change(1, letters=[link_letter("c-1", 1)])
    )
    assert await stranger.relay.drain() == 0 and records.letters_queued() == 1 and not sink.messages()
    # A retry of the change on the stranger answers the promised hash and sends nothing itself.
    again = await ActivityEnvironment().run(
        stranger.record_change_with_link, change(1, letters=[link_letter("c-1", 1)])
    )
    assert again == issued and not sink.messages()
    with records.engine.begin() as conn:  # the stranger's wait is over: due now
        conn.execute(letter_queue.update().values(due_at=utc_now()))
    assert await recorder.relay.drain() == 1
    [invitation] = to_admin(sink)
    assert token_hash(token_in(invitation)) == issued.token_sha256


async def test_a_link_a_keyless_attempt_sent_is_answered_as_sent_by_a_keyed_retry(
    records: Records, sink: MailSink
) -> None:
    keyless, keyed_worker = capabilities(records, sink.port), keyed(records, sink.port, secrets.token_bytes(32))
    link = link_letter("c-1", 1)
    first = await ActivityEnvironment().run(keyless.send_letter, link)  # sent, then the worker died
    again = await ActivityEnvironment().run(keyed_worker.record_change_with_link, change(1, letters=[link]))
    assert again.token_sha256 == first.token_sha256 and records.letters_queued() == 0
    assert len(to_admin(sink)) == 1 and records.current("customers", "relationship/p-1/c-1") is not None


async def test_a_link_not_yet_mailed_goes_no_more_once_replaced_or_ended(records: Records, sink: MailSink) -> None:
    acts = keyed(records, sink.port, secrets.token_bytes(32))
    run = ActivityEnvironment().run
    await run(acts.record_change_with_link, change(1, letters=[link_letter("c-1", 1)]))
    second = await run(acts.record_change_with_link, change(2, letters=[link_letter("c-1", 2)]))  # a resend
    assert records.letters_queued() == 1
    await run(acts.record_change, change(3, to_state="invitation_expired", voids_link=True))
    assert records.letters_queued() == 0 and await acts.relay.drain() == 0 and not sink.messages()
    assert second.token_sha256  # the resent link was promised, and ended before it went


async def test_a_link_past_its_expiry_is_dropped_unsent(records: Records, sink: MailSink) -> None:
    acts = keyed(records, sink.port, secrets.token_bytes(32))
    stale = link_letter("c-1", 1).model_copy(update={"expires_at": utc_now() - timedelta(seconds=1)})
    await ActivityEnvironment().run(acts.record_change_with_link, change(1, letters=[stale]))
    assert await acts.relay.drain() == 1 and records.letters_queued() == 0 and not sink.messages()


async def test_letters_behind_a_failed_one_wait_for_it(records: Records, sink: MailSink) -> None:
    """The reader gets its lifecycle's letters in the order of its changes, outage or not."""
    queue(records, "c-1", letter("c-1", 2), letter("c-1", 2, "customer_ended"))
    down = capabilities(records, free_port()).relay
    assert await down.drain() == 0 and records.letters_queued() == 2
    with records.engine.connect() as conn:
        due = dict(conn.execute(sa.select(letter_queue.c.key, letter_queue.c.due_at)).all())
    first, second = (
        due[letter("c-1", 2, kind).key].replace(tzinfo=UTC) for kind in ("partner_accepted", "customer_ended")
    )
    assert utc_now() < first < second  # the failed one waits, and the next just behind it


async def test_a_new_link_drops_only_the_unsent_link_never_a_notice(records: Records, sink: MailSink) -> None:
    """A resend (or a reinstatement's new link) supersedes the old link; a notice still waiting
    (its relay died mid-send, its claim not yet run out) is the reader's and must still go."""
    acts = keyed(records, sink.port, secrets.token_bytes(32))
    run = ActivityEnvironment().run
    await run(acts.record_change_with_link, change(1, letters=[link_letter("c-1", 1), letter("c-1", 1)]))
    await run(acts.record_change_with_link, change(2, letters=[link_letter("c-1", 2)]))
    with records.engine.connect() as conn:
        left = sorted(conn.execute(sa.select(letter_queue.c.key)).scalars())
    assert left == sorted([letter("c-1", 1).key, link_letter("c-1", 2).key])
