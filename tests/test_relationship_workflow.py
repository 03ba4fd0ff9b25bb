"""The Relationship workflow on the time-skipping server, with real SMTP and SQLite.

Payloads are sent as raw JSON dicts, exactly as any SDK or the `temporal` CLI would.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink, text_of
from partnerflow.states.models import RelationshipView
from partnerflow.states.tokens import token_hash
from partnerflow.testing import (
    ADMIN,
    KIT_KEYS,
    LINK_BASE,
    Harness,
    actor,
    client_for,
    poll,
    register_partners,
    sign_start,
    start_input,
)
from partnerflow.worker import new_worker
from partnerflow.workflows.interpreter import ENGINE_PATCH

pytestmark = pytest.mark.server


def accept(token: str, **extra: Any) -> dict[str, Any]:
    return {"token": token, "customer_admin": ADMIN, "accept_agreement": True, **extra}


async def rejected(harness: Harness, handle: Any, name: str, payload: dict[str, Any]) -> ApplicationError:
    """Send an update that must be refused; return the error, and check history is untouched."""
    before = await harness.history_size(handle)
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await harness.update(handle, name, payload)
    assert await harness.history_size(handle) == before, "a rejected update wrote history"
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def test_an_invitation_emails_one_token_and_records_the_customer(partnerflow: Harness) -> None:
    """Starting sends exactly one invitation with a link token, and the records show `invited`."""
    handle = await partnerflow.start()
    view = await partnerflow.wait_for_state(handle, "invited")
    body = start_input()
    [mail] = partnerflow.mail()
    assert mail["To"] == body["customer"]["admin_email"]
    assert "Fabrikam" in mail["Subject"] and "Contoso Ltd" in mail["Subject"]
    token = partnerflow.token()
    assert len(token) >= 22  # >= 128 bits in url-safe base64
    assert view.invitation_expires_at is not None
    desc = await handle.describe()
    customer_id = desc.id.split("/")[-1]
    row = partnerflow.records.customer("public", "p-100", customer_id)
    assert row and row["state"] == "invited" and row["version"] == 1
    [entry] = partnerflow.records.outbox_for(desc.id)
    assert entry.status == "sent" and entry.token_sha256 == token_hash(token)
    [audit] = partnerflow.records.audit_trail(desc.id)
    assert (audit["operation"], audit["from_state"], audit["to_state"]) == (
        "CreateCustomerInvitation",
        None,
        "invited",
    )
    # The invitation went with the change (the relay sent it): no activity in the workflow's path.
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]


async def test_a_live_token_is_nowhere_but_in_the_email(partnerflow: Harness) -> None:
    """Not in history, the query, search attributes, details or records while it is live."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    await partnerflow.update(handle, "resend_invitation", {"actor": actor()})
    for token in partnerflow.tokens():
        history = (await handle.fetch_history()).to_json()
        assert token not in history
        assert token not in str(await handle.query("state"))
        assert token not in str(await handle.describe())
        assert token not in str(partnerflow.records.audit_trail(handle.id))
        assert token not in str(partnerflow.records.outbox_for(handle.id))


async def test_a_whole_life_invite_accept_permission_end_reinstate_accept(partnerflow: Harness) -> None:
    """The contract's happy path keeps one identity and counts the reinstatement."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    view = await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    assert view.state == "active" and not view.purchase_permission
    view = await partnerflow.update(handle, "set_purchase_permission", {"actor": actor("admin_agent"), "allowed": True})
    assert view.purchase_permission
    view = await partnerflow.update(handle, "end_relationship", {"actor": actor(), "reason": "moving on"})
    assert view.state == "ended" and not view.purchase_permission
    view = await partnerflow.update(handle, "reinstate", {"actor": actor()})
    assert view.state == "invited" and view.reinstated_count == 0
    view = await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    assert view.state == "active" and view.reinstated_count == 1

    operations = [a.operation for a in view.audit]
    assert operations == [
        "CreateCustomerInvitation",
        "AddCustomer",
        "CreateSelfServePolicy",
        "RemovePartnerCustomerRelationship",
        "ReinstateCustomer",
        "AddCustomer",
    ]
    wid = handle.id
    trail = partnerflow.records.audit_trail(wid)
    assert [r["operation"] for r in trail] == operations
    assert trail[3]["reason"] == "moving on"
    row = partnerflow.records.customer("public", "p-100", wid.split("/")[-1])
    assert row is not None
    assert (row["state"], row["reinstated_count"], row["version"]) == ("active", 1, 6)
    subjects = [m["Subject"] for m in partnerflow.mail()]
    assert sum("invites" in s for s in subjects) == 2
    assert sum("accepted your reseller relationship" in s for s in subjects) == 2
    assert sum("ended its reseller relationship" in s for s in subjects) == 1
    # The partner's notice goes to the user who sent the invitation.
    assert {m["To"] for m in partnerflow.mail() if "accepted" in m["Subject"]} == {"sam@fabrikam.example"}


async def test_wrong_used_and_replaced_tokens_are_refused(partnerflow: Harness) -> None:
    """Only the live token works; a refusal says which rule and leaves no trace."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    first = partnerflow.token()
    error = await rejected(partnerflow, handle, "accept_invitation", accept("not-the-token"))
    assert error.type == "GuardFailed" and "token" in error.message

    await partnerflow.update(handle, "resend_invitation", {"actor": actor()})
    assert len(partnerflow.tokens()) == 2
    error = await rejected(partnerflow, handle, "accept_invitation", accept(first))
    assert error.type == "GuardFailed"

    error = await rejected(
        partnerflow, handle, "accept_invitation", accept(partnerflow.token(), accept_agreement=False)
    )
    assert "accept_agreement must be true" in error.message

    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    error = await rejected(partnerflow, handle, "accept_invitation", accept(partnerflow.token()))
    assert error.type == "TransitionNotAllowed"
    assert "accept_invitation is not allowed while the relationship is active" in error.message


@pytest.mark.parametrize(
    ("name", "payload", "rule_text"),
    [
        (
            "set_purchase_permission",
            {"actor": actor("sales_agent"), "allowed": True},
            "actor.role sales_agent may not set_purchase_permission",
        ),
        (
            "end_relationship",
            {"actor": actor("helpdesk_agent")},
            "actor.role helpdesk_agent may not end_relationship",
        ),
        (
            "end_relationship",
            {"actor": actor("global_admin", partner_id="p-999")},
            "actor.partner_id must be the relationship's partner (p-100)",
        ),
        (
            "remove_partner",
            {"customer_admin": {**ADMIN, "customer_id": "someone-else"}},
            "customer_id must be this relationship's customer",
        ),
    ],
)
async def test_roles_partners_and_customers_out_of_place_are_refused(
    partnerflow: Harness, name: str, payload: dict[str, Any], rule_text: str
) -> None:
    """Role, partner and customer rules reject the update and name the rule."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    error = await rejected(partnerflow, handle, name, payload)
    assert rule_text in error.message
    assert (await partnerflow.view(handle)).state == "active"


async def test_an_indirect_reseller_cannot_end_a_relationship(partnerflow: Harness) -> None:
    """Ending is never an indirect reseller's to do (DOMAIN.md)."""
    handle = await partnerflow.start(partner={"kind": "indirect_reseller", "indirect_provider_id": "dist-1"})
    await partnerflow.wait_for_state(handle, "invited")
    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    error = await rejected(partnerflow, handle, "end_relationship", {"actor": actor("global_admin")})
    assert error.type == "PermissionDenied" and "indirect_reseller" in error.message


async def test_ending_waits_until_the_customer_has_no_active_subscriptions(partnerflow: Harness) -> None:
    """The subscriptions guard reads the records; a refused end changes nothing."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    customer_id = handle.id.split("/")[-1]
    from partnerflow.activities.records import utc_now

    partnerflow.records.set_active_subscriptions("public", "p-100", customer_id, 2, now=utc_now())
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await partnerflow.update(handle, "end_relationship", {"actor": actor()})
    assert "no active subscriptions" in str(caught.value.cause)
    assert (await partnerflow.view(handle)).state == "active"
    assert len(partnerflow.records.audit_trail(handle.id)) == 2

    partnerflow.records.set_active_subscriptions("public", "p-100", customer_id, 0, now=utc_now())
    view = await partnerflow.update(handle, "end_relationship", {"actor": actor()})
    assert view.state == "ended"


async def test_the_customer_can_remove_the_partner(partnerflow: Harness) -> None:
    """remove_partner ends the relationship from the customer side and tells the partner."""
    handle = await partnerflow.start(partner={"contact_email": "alerts@fabrikam.example"})
    await partnerflow.wait_for_state(handle, "invited")
    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    customer_id = handle.id.split("/")[-1]
    view = await partnerflow.update(
        handle,
        "remove_partner",
        {
            "customer_admin": {"user": "Mallory", "email": "mallory@evil.example", "customer_id": customer_id},
            "reason": "in-house now",
        },
    )
    assert view.state == "ended"
    # Proven by the customer portal's assertion; audited as the admin on record, not as typed.
    assert (view.audit[-1].actor_role, view.audit[-1].actor_user) == ("customer_admin", "admin@contoso.example")
    removed = [m for m in partnerflow.mail() if "removed" in m["Subject"]]
    assert [m["To"] for m in removed] == ["alerts@fabrikam.example"]


async def test_a_link_answer_is_audited_as_the_address_the_link_was_mailed_to(partnerflow: Harness) -> None:
    """Whatever address the accept's payload names, the audit names the customer admin on record."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    other = {"user": "Someone", "email": "someone@else.example"}
    payload = {"token": partnerflow.token(), "customer_admin": other, "accept_agreement": True}
    view = await partnerflow.update(handle, "accept_invitation", payload)
    assert (view.audit[-1].actor_role, view.audit[-1].actor_user) == ("customer_admin", "admin@contoso.example")


async def test_setting_the_permission_to_what_it_is_changes_nothing(partnerflow: Harness) -> None:
    """An idempotent set: no audit row, no new version."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    view = await partnerflow.update(
        handle, "set_purchase_permission", {"actor": actor("global_admin"), "allowed": False}
    )
    assert not view.purchase_permission and len(view.audit) == 2
    view = await partnerflow.update(
        handle, "set_purchase_permission", {"actor": actor("global_admin"), "allowed": True}
    )
    view = await partnerflow.update(
        handle, "set_purchase_permission", {"actor": actor("global_admin"), "allowed": False}
    )
    assert [a.operation for a in view.audit][-2:] == ["CreateSelfServePolicy", "DeleteSelfServePolicy"]


async def test_invitation_reminders_then_expiry_then_resend(partnerflow: Harness) -> None:
    """Reminders 7 and 1 days before; expiry at 30 days; a resend revives it with a new token."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    admin = "admin@contoso.example"

    def reminders() -> int:
        return sum("Reminder" in m["Subject"] for m in partnerflow.mail(admin))

    await partnerflow.env.sleep(timedelta(days=22))
    assert reminders() == 0
    await partnerflow.env.sleep(timedelta(days=1, hours=1))
    assert reminders() == 1
    await partnerflow.env.sleep(timedelta(days=6))
    assert reminders() == 2
    assert (await partnerflow.view(handle)).state == "invited"
    await partnerflow.env.sleep(timedelta(days=1))
    view = await partnerflow.view(handle)
    assert view.state == "invitation_expired"
    old = partnerflow.token()
    error = await rejected(partnerflow, handle, "accept_invitation", accept(old))
    assert error.type == "TransitionNotAllowed"
    assert not any(old in text_of(m) for m in partnerflow.mail() if "Reminder" in m["Subject"])

    view = await partnerflow.update(handle, "resend_invitation", {"actor": actor()})
    assert view.state == "invited" and partnerflow.token() != old
    view = await partnerflow.update(handle, "cancel_invitation", {"actor": actor(), "reason": "wrong contact"})
    assert view.state == "cancelled"
    assert (await handle.result()).state == "cancelled"


async def test_shorter_timers_come_from_the_start_input(partnerflow: Harness) -> None:
    """Timers are configuration: a 2-day invitation with a reminder 1 day before."""
    handle = await partnerflow.start(timers={"invitation_ttl": "P2D", "reminders_before": ["P1D"]})
    await partnerflow.wait_for_state(handle, "invited")
    await partnerflow.env.sleep(timedelta(days=1, minutes=1))
    assert sum("Reminder" in m["Subject"] for m in partnerflow.mail()) == 1
    await partnerflow.env.sleep(timedelta(days=1))
    assert (await partnerflow.view(handle)).state == "invitation_expired"


async def test_a_referral_is_accepted_into_an_invitation(partnerflow: Harness) -> None:
    """Accepting a referral sends the invitation; the referrer started it."""
    handle = await partnerflow.start(
        origin="referral",
        referred_by="dist-1",
        customer={"admin_email": None},
        actor=actor("sales_agent", partner_id="dist-1", user="d@dist.example"),
    )
    view = await partnerflow.wait_for_state(handle, "referred")
    assert view.audit[0].operation == "CreateReferral" and partnerflow.mail() == []
    assert view.admin_email is None  # the referrer does not say where the invitation goes
    by_referrer = {"actor": actor("sales_agent", partner_id="dist-1"), "admin_email": "admin@contoso.example"}
    error = await rejected(partnerflow, handle, "accept_referral", by_referrer)
    assert error.type == "PermissionDenied"
    error = await rejected(partnerflow, handle, "accept_referral", {"actor": actor()})
    assert error.type == "InvalidInput" and "admin_email: is required" in error.message
    view = await partnerflow.update(handle, "accept_referral", {"actor": actor(), "admin_email": "it@contoso.example"})
    assert view.state == "invited" and view.admin_email == "it@contoso.example"
    assert [m["To"] for m in partnerflow.mail()] == ["it@contoso.example"] and len(partnerflow.tokens()) == 1


async def test_a_declined_referral_is_final_and_the_referrer_is_told(partnerflow: Harness) -> None:
    handle = await partnerflow.start(
        origin="referral",
        referred_by="dist-1",
        customer={"admin_email": None},
        actor=actor(partner_id="dist-1", user="d@dist.example"),
    )
    await partnerflow.wait_for_state(handle, "referred")
    view = await partnerflow.update(handle, "decline_referral", {"actor": actor(), "reason": "not our region"})
    assert view.state == "referral_declined"
    assert (await handle.result()).state == "referral_declined"
    [notice] = partnerflow.mail("d@dist.example")
    assert "declined" in notice["Subject"] and "not our region" in text_of(notice)


async def test_an_unanswered_referral_expires_after_14_days(partnerflow: Harness) -> None:
    handle = await partnerflow.start(
        origin="referral",
        referred_by="dist-1",
        customer={"admin_email": None},
        actor=actor(partner_id="dist-1", user="d@dist.example"),
    )
    await partnerflow.wait_for_state(handle, "referred")
    await partnerflow.env.sleep(timedelta(days=13, hours=23))
    assert (await partnerflow.view(handle)).state == "referred"
    await partnerflow.env.sleep(timedelta(hours=2))
    result = await handle.result()
    assert result.state == "referral_expired"
    assert result.audit[-1].actor_role == "system"
    await partnerflow.letters_sent()
    [notice] = partnerflow.mail("d@dist.example")
    assert "expired" in notice["Subject"]


async def test_referrals_do_not_exist_in_the_usgov_cloud(partnerflow_usgov: Harness) -> None:
    """The start fails with the cloud rule; nothing is recorded or sent."""
    handle = await partnerflow_usgov.start(
        cloud="usgov",
        origin="referral",
        referred_by="dist-1",
        customer={"admin_email": None},
        actor=actor(partner_id="dist-1"),
    )
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert "refer does not exist in the usgov cloud" in str(caught.value.cause)
    assert partnerflow_usgov.records.audit_trail(handle.id) == [] and partnerflow_usgov.mail() == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"actor": actor(partner_id="p-999")}, "actor.partner_id must be the relationship's partner"),
        ({"actor": actor("helpdesk_agent")}, "actor.role helpdesk_agent may not invite"),
        ({"cloud": "usgov"}, "cloud usgov relationships live in namespace relationships-usgov"),
        ({"origin": "referral"}, "referred_by is required when origin is referral"),
        ({"customer": {"admin_email": "not an address"}}, "customer.admin_email"),
        ({"partner": {"kind": "indirect_reseller"}}, "indirect_provider_id is required"),
        ({"customer": {"company": "Evil\r\nBcc: all@example.com"}}, "customer.company"),
        ({"actor": {"user": "sam@fabrikam.example", "role": "boss", "partner_id": "p-100"}}, "actor.role"),
    ],
)
async def test_bad_start_input_fails_the_start_naming_the_field(
    partnerflow: Harness, overrides: dict[str, Any], message: str
) -> None:
    """Raw JSON that breaks a rule fails the workflow at once (never a stuck task), writing nothing."""
    handle = await partnerflow.start(**overrides)
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert message in str(caught.value.cause)
    assert partnerflow.records.audit_trail(handle.id) == [] and partnerflow.mail() == []


async def test_a_workflow_id_not_matching_the_relationship_is_refused(partnerflow: Harness) -> None:
    body = start_input()
    handle = await partnerflow.client.start_workflow(
        "Relationship", body, id="relationship/p-100/someone-else", task_queue=partnerflow.task_queue
    )
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert "workflow_id must be relationship/p-100/" in str(caught.value.cause)


async def test_bad_update_payloads_are_refused_naming_the_field(partnerflow: Harness) -> None:
    """A payload that does not decode is rejected before history, with field and rule."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    error = await rejected(partnerflow, handle, "accept_invitation", {"token": "x", "customer_admin": {"user": "A"}})
    assert error.type == "InvalidInput"
    assert "customer_admin.email: Field required" in error.message
    assert "accept_agreement: Field required" in error.message
    error = await rejected(partnerflow, handle, "set_purchase_permission", {"actor": actor(), "allowed": "yes"})
    assert "allowed: Input should be a valid boolean" in error.message
    assert (await partnerflow.view(handle)).state == "invited"


async def test_search_attributes_and_details_follow_the_state(partnerflow: Harness) -> None:
    """Ops can find the relationship by state, partner, customer, cloud and invitation deadline."""
    handle = await partnerflow.start()
    view = await partnerflow.wait_for_state(handle, "invited")
    attrs_at_start = view.audit[0].at
    invited_attrs = {p.key.name: p.value for p in (await handle.describe()).typed_search_attributes}
    assert invited_attrs["InvitationExpiresAt"] == view.invitation_expires_at
    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    attrs = {p.key.name: p.value for p in (await handle.describe()).typed_search_attributes}
    assert attrs.pop("InvitationExpiresAt") > attrs_at_start
    assert attrs.pop("StateChangedAt") == (await partnerflow.view(handle)).audit[-1].at
    # The SDK's mark of the patches a new relationship takes: one, the engine's (it stands for the
    # admission, the invitation and the letters queued with the change, each a patch of its own
    # in a run begun before it).
    assert attrs.pop("TemporalChangeVersion") == [ENGINE_PATCH]
    assert attrs == {
        "RelationshipState": "active",
        "PartnerId": "p-100",
        "CustomerId": handle.id.split("/")[-1],
        "Cloud": "public",
    }
    meta = await handle.query("__temporal_workflow_metadata")
    details = meta.current_details if hasattr(meta, "current_details") else meta["currentDetails"]
    assert "**active**" in details and "`end_relationship`" in details
    # What a user typed is escaped Markdown: it renders as typed, never as a (mailto) link.
    assert "`AddCustomer` by admin\\@contoso\\.example (customer_admin)" in details


async def test_the_view_is_the_contract(partnerflow: Harness) -> None:
    """The `state` query carries every field CONTRACT.md promises."""
    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    raw = await handle.query("state")
    assert {
        "state",
        "purchase_permission",
        "reinstated_count",
        "cloud",
        "partner_id",
        "customer_id",
        "audit",
    } <= set(raw)
    entry = raw["audit"][0]
    assert {"operation", "actor_user", "actor_role", "from_state", "to_state", "at"} <= set(entry)
    assert RelationshipView.model_validate(raw).state == "invited"


async def test_the_invitation_query_shows_details_only_to_the_live_token(partnerflow: Harness) -> None:
    """The page's lookup: details for the live token, why for a spent one, nothing for a guess."""

    async def lookup(token: str) -> dict[str, Any]:
        return dict(await handle.query("invitation", {"token": token}))

    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    first = partnerflow.token()
    valid = await lookup(first)
    assert valid["status"] == "valid" and valid["company"] == "Contoso Ltd"
    assert valid["admin_email"] == "admin@contoso.example" and valid["expires_at"] and valid["country"] == "US"
    guess = await lookup("guessed-token")
    assert guess == {
        "status": "unknown",
        "partner_name": None,
        "company": None,
        "admin_email": None,
        "expires_at": None,
        "locale": None,
        "country": None,
    }

    await partnerflow.update(handle, "resend_invitation", {"actor": actor()})
    assert (await lookup(first))["status"] == "replaced"
    second = partnerflow.token()
    await partnerflow.update(handle, "accept_invitation", accept(second))
    used = await lookup(second)
    assert used["status"] == "accepted" and used["company"] is None
    before = await partnerflow.history_size(handle)
    await lookup(second)
    assert await partnerflow.history_size(handle) == before, "a lookup writes nothing"


async def test_reminders_missed_in_a_worker_outage_are_not_sent_late(
    partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> None:
    """With no worker past the expiry, the invitation expires without a late reminder.

    On the dev server with second-long timers: the time-skipping server does not
    skip time while a workflow task waits for a worker that is not there.
    """
    mailer = Mailer(SmtpSettings(port=partnerflow_mail.port))
    activities = Capabilities(partnerflow_records, mailer, LINK_BASE, verifier=KIT_KEYS.verifier())
    client = client_for(partnerflow_dev_env)
    task_queue = f"tq-{uuid.uuid4()}"
    body = start_input(timers={"invitation_ttl": "PT3S", "reminders_before": ["PT2S", "PT1S"]})
    register_partners(partnerflow_records, body)
    body = sign_start(body)
    harness = Harness(partnerflow_dev_env, client, partnerflow_mail, partnerflow_records, task_queue)
    async with new_worker(client, activities, task_queue):
        handle = await client.start_workflow(
            "Relationship", body, id=f"relationship/p-100/{body['customer']['id']}", task_queue=task_queue
        )
        view = await harness.wait_for_state(handle, "invited")
    expires_at = view.invitation_expires_at
    assert expires_at is not None

    async def expired_by_the_clock() -> bool:
        return datetime.now(UTC) > expires_at + timedelta(milliseconds=200)

    await poll(expired_by_the_clock, attempts=400)  # the outage outlasts the invitation
    async with new_worker(client, activities, task_queue):
        view = await harness.wait_for_state(handle, "invitation_expired")
    assert view.audit[-1].operation == "ExpireCustomerInvitation"
    assert [m["Subject"] for m in partnerflow_mail.messages() if "Reminder" in m["Subject"]] == []
