"""The letter relay on a real database (PostgreSQL and SQLite) and a real SMTP server: a change's
letters are queued in its own transaction and each is sent once, whichever relay takes it,
whatever fails meanwhile."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records, utc_now
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
