"""The letter relay on a real database (PostgreSQL and SQLite) and a real SMTP server: a change's
letters are queued in its own transaction and each is sent once, whichever relay takes it,
whatever fails meanwhile."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records, utc_now
from partnerflow.activities.relay import CLAIM, LAST_WAIT, wait_after
from partnerflow.mailsink import MailSink
from partnerflow.states.messages import SendLetter
from partnerflow.testing import free_port
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
