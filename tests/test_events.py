"""Events out: every change in the event log (replayable from a cursor), and webhooks that
deliver it to a real HTTP receiver, signed (checked with the `standardwebhooks` package),
in order, patiently, with dead letters and redelivery."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from cloudevents.v1.http import from_json
from standardwebhooks import Webhook

from partnerflow.events import Events, EventsError
from partnerflow.states.events import CloudEvent
from partnerflow.states.models import Cloud
from partnerflow.testing import ADMIN, Harness, actor, poll
from reliability.receiver import Receiver, free_port

ADMIN_AGENT = actor("admin_agent", user="ada@fabrikam.example")
LIFE = [
    "reseller-relationship-invitation-created",
    "reseller-relationship-accepted-by-customer",
    "purchase-permission-changed",
    "reseller-relationship-suspended",
]


def accept(token: str) -> dict[str, Any]:
    return {"token": token, "customer_admin": ADMIN, "accept_agreement": True}


async def live(harness: Harness, **overrides: Any) -> Any:
    """A relationship through LIFE's four changes."""
    handle = await harness.start(**overrides)
    await harness.wait_for_state(handle, "invited")
    await harness.update(handle, "accept_invitation", accept(harness.latest_token()))
    await harness.update(handle, "set_purchase_permission", {"actor": ADMIN_AGENT, "allowed": True})
    await harness.update(handle, "suspend", {"actor": ADMIN_AGENT, "reason": "non_payment"})
    return handle


# --- the log ---------------------------------------------------------------------------------


async def test_every_change_is_logged_in_order_and_replays_from_a_cursor(partnerflow: Harness) -> None:
    handle = await live(partnerflow)
    events = Events(partnerflow.records)
    everything, cursor = events.since(Cloud.PUBLIC, "p-100")
    mine = [e for e in everything if e["subject"] == handle.id]
    assert [e["type"] for e in mine] == LIFE
    parsed = from_json(json.dumps(mine[1]).encode())  # a CloudEvents library that is not ours reads it
    assert (parsed["specversion"], parsed["source"], parsed["subject"]) == (
        "1.0",
        "/partnerflow/public/relationship",
        handle.id,
    )
    data = mine[1]["data"]
    assert (data["before_state"], data["after_state"], data["operation"]) == ("invited", "active", "AddCustomer")
    assert data["actor"] == {"user": ADMIN["email"], "role": "customer_admin"} and data["schema_version"] == 1
    assert data["record"]["state"] == "active" and data["record"]["company"] == "Contoso Ltd"
    assert [e["data"]["sequence"] for e in mine] == [1, 2, 3, 4], "the relationship's audit sequence"
    assert len({e["id"] for e in mine}) == 4 and cursor == mine[-1]["partnerflowseq"]
    for event in everything:
        CloudEvent.model_validate(event)  # the published schema (schemas/event.json)
    for token in partnerflow.tokens():
        assert token not in json.dumps(everything), "no token in any event"
    # A consumer that saw the second event asks for what came after it.
    rest, _ = events.since(Cloud.PUBLIC, "p-100", after=mine[1]["partnerflowseq"])
    assert [e["type"] for e in rest if e["subject"] == handle.id] == LIFE[2:]
    only, _ = events.since(Cloud.PUBLIC, "p-100", types=["*suspended", "purchase-*"])
    assert [e["type"] for e in only] == LIFE[2:]
    assert events.since(Cloud.PUBLIC, "p-999")[0] == [], "a partner sees only its own relationships' events"


async def test_an_indirect_reseller_s_events_are_named_apart_and_its_provider_sees_them(partnerflow: Harness) -> None:
    from datetime import UTC, datetime

    from partnerflow.states.models import Partner, PartnerKind

    provider = Partner(id="dist-9", name="Northwind", kind=PartnerKind.INDIRECT_PROVIDER, contact_email="d@n.example")
    partnerflow.records.put_partner("public", provider, now=datetime.now(UTC))
    reseller = {"id": "r-9", "name": "Tailspin", "kind": "indirect_reseller", "indirect_provider_id": "dist-9"}
    handle = await partnerflow.start(partner=reseller, actor=actor(partner_id="r-9", user="lee@tailspin.example"))
    await partnerflow.wait_for_state(handle, "invited")
    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.latest_token()))
    seen, _ = Events(partnerflow.records).since(Cloud.PUBLIC, "dist-9")
    assert [e["type"] for e in seen] == [
        "reseller-relationship-invitation-created",
        "indirect-reseller-relationship-accepted-by-customer",
    ]


# --- webhooks, to a real receiver ----------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    await r.start()
    yield r
    await r.stop()


def hooks(harness: Harness) -> Events:
    return Events(harness.records, {Cloud.PUBLIC: harness.client})


async def subscribe(harness: Harness, receiver: Receiver, **options: Any) -> Any:
    return await hooks(harness).subscribe(Cloud.PUBLIC, "p-100", receiver.url, task_queue=harness.task_queue, **options)


async def test_a_webhook_gets_every_event_in_order_signed_even_through_failures(
    partnerflow_live: Harness, receiver: Receiver
) -> None:
    receiver.failing = 3  # the first attempts fail: each event still arrives, in order
    hook = await subscribe(partnerflow_live, receiver)
    handle = await live(partnerflow_live)

    async def all_arrived() -> bool:
        return len({e["id"] for e in receiver.events(hook.secret)}) >= len(LIFE)

    await poll(all_arrived, attempts=600)
    got = receiver.events(hook.secret)
    firsts = list(dict.fromkeys(e["id"] for e in got))  # repeats only as the same id
    by_id = {e["id"]: e for e in got}
    assert [by_id[i]["type"] for i in firsts] == LIFE and all(by_id[i]["subject"] == handle.id for i in firsts)
    assert [by_id[i]["partnerflowseq"] for i in firsts] == sorted(by_id[i]["partnerflowseq"] for i in firsts)
    stats = hooks(partnerflow_live).stats(hook.webhook_id)
    assert stats["delivered"] == len(LIFE) and stats["dead"] == 0
    [delivered_first] = [d for d in partnerflow_live.records.deliveries(hook.webhook_id) if d["event_id"] == firsts[0]]
    assert delivered_first["attempts"] == 4, "three refusals, then taken"


async def test_a_receiver_that_is_down_or_slow_holds_up_no_lifecycle(
    partnerflow_live: Harness, receiver: Receiver
) -> None:
    receiver.delay_s = 3.0
    hook = await subscribe(partnerflow_live, receiver)
    handle = await live(partnerflow_live)  # four changes, each answered at once
    view = await partnerflow_live.view(handle)
    assert view.state == "suspended" and len(receiver.got) < len(LIFE), "the lifecycle did not wait for the receiver"
    await receiver.stop()  # down: nothing is lost, it waits
    receiver.delay_s = 0.0
    await partnerflow_live.update(handle, "resume", {"actor": ADMIN_AGENT})
    await receiver.start()

    async def caught_up() -> bool:
        return len({e["id"] for e in receiver.events(hook.secret)}) >= len(LIFE) + 1

    await poll(caught_up, attempts=600)
    types = list(dict.fromkeys((e["id"], e["type"]) for e in receiver.events(hook.secret)))
    assert [t for _, t in types] == [*LIFE, "reseller-relationship-resumed"]


async def test_after_the_retry_window_an_event_is_a_dead_letter_that_ops_redeliver(
    partnerflow_live: Harness, receiver: Receiver
) -> None:
    receiver.failing = -1
    hook = await subscribe(partnerflow_live, receiver, retry_window=timedelta(seconds=3))
    handle = await partnerflow_live.start()
    await partnerflow_live.wait_for_state(handle, "invited")
    events = hooks(partnerflow_live)

    async def dead() -> bool:
        return len(events.dead_letters(hook.webhook_id)) == 1

    await poll(dead, attempts=600)
    [letter] = events.dead_letters(hook.webhook_id)
    assert letter["last_error"] == "receiver answered 500" and letter["attempts"] >= 2
    receiver.failing = 0
    assert await events.redeliver(hook.webhook_id) >= 1

    async def delivered() -> bool:
        return bool(receiver.got)

    await poll(delivered, attempts=600)
    [event] = receiver.events(hook.secret)
    assert event["id"] == letter["event_id"] and event["type"] == "reseller-relationship-invitation-created"
    with pytest.raises(EventsError, match="event_ids: nope is not an event of partner p-100"):
        await events.redeliver(hook.webhook_id, ["nope"])


async def test_during_a_secret_rotation_both_secrets_verify(partnerflow_live: Harness, receiver: Receiver) -> None:
    events = hooks(partnerflow_live)
    hook = await subscribe(partnerflow_live, receiver)
    new = events.rotate(hook.webhook_id)
    handle = await partnerflow_live.start()

    async def arrived() -> bool:
        return bool(receiver.got)

    await poll(arrived, attempts=600)
    assert receiver.events(hook.secret, new)[0]["subject"] == handle.id, "signed with the old and the new"
    events.finish_rotation(hook.webhook_id)
    await partnerflow_live.update(handle, "cancel_invitation", {"actor": actor()})

    async def second() -> bool:
        return len(receiver.got) >= 2

    await poll(second, attempts=600)
    Webhook(new).verify(receiver.got[-1][1], receiver.got[-1][0])
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(hook.secret).verify(receiver.got[-1][1], receiver.got[-1][0])
    assert [w["webhook_id"] for w in events.webhooks(Cloud.PUBLIC, "p-100")] == [hook.webhook_id]
    assert "secret" not in events.webhooks(Cloud.PUBLIC)[0]
    events.unsubscribe(hook.webhook_id)
    assert events.webhooks(Cloud.PUBLIC, "p-100") == []


def test_a_webhook_url_must_be_https_or_this_machine() -> None:
    from partnerflow.events import check_types, check_url

    assert check_url("https://hooks.example.com/x") and check_url("http://127.0.0.1:9/x")
    for bad in ("http://hooks.example.com/x", "ftp://x", "https://", "javascript:alert(1)"):
        with pytest.raises(EventsError, match="url:"):
            check_url(bad)
    with pytest.raises(EventsError, match="types:"):
        check_types(["reseller-<script>"])
    with contextlib.suppress(EventsError):
        check_types(["*"])
