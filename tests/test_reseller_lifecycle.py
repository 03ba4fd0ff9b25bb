"""The reseller lifecycle, complete: suspension, what blocks an end, and two-tier links.

On the time-skipping server (a suspension's 90 days pass in a moment), with real SMTP and
SQLite; payloads as raw JSON, as any SDK would send them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from partnerflow.activities.i18n import when
from partnerflow.mailsink import text_of
from partnerflow.states.models import STRICT, Partner, PartnerKind
from partnerflow.testing import ADMIN, Harness, actor

pytestmark = pytest.mark.server

PARTNER_CONTACT = "alerts@fabrikam.example"
ADMIN_AGENT = actor("admin_agent", user="ada@fabrikam.example")


def accept(token: str) -> dict[str, Any]:
    return {"token": token, "customer_admin": ADMIN, "accept_agreement": True}


async def refused(
    harness: Harness, handle: Any, name: str, payload: dict[str, Any], *, validated: bool = True
) -> ApplicationError:
    """An update that must be refused, leaving the audit as it was; and the history too where
    its validator refuses it (a guard on a fact of the records refuses after reading it)."""
    before, audit = await harness.history_size(handle), len((await harness.view(handle)).audit)
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await harness.update(handle, name, payload)
    if validated:
        assert await harness.history_size(handle) == before, "a refused update wrote history"
    assert len((await harness.view(handle)).audit) == audit
    assert isinstance(caught.value.cause, ApplicationError)
    return caught.value.cause


def subjects(harness: Harness, to: str) -> list[str]:
    """Each message's subject, decoded (RFC 2047) and unfolded."""
    return [" ".join(str(make_header(decode_header(m["Subject"]))).split()) for m in harness.mail(to)]


async def details(handle: Any) -> str:
    meta = await handle.query("__temporal_workflow_metadata")
    return str(meta.current_details if hasattr(meta, "current_details") else meta["currentDetails"])


async def test_a_suspension_not_resumed_ends_by_itself_after_warning_both_sides(partnerflow: Harness) -> None:
    handle = await partnerflow.bring_to("active", partner={"contact_email": PARTNER_CONTACT})
    await partnerflow.update(handle, "set_purchase_permission", {"actor": ADMIN_AGENT, "allowed": True})

    view = await partnerflow.update(handle, "suspend", {"actor": ADMIN_AGENT, "reason": "non_payment"})
    assert (view.state, view.purchase_permission, view.suspension_reason) == ("suspended", False, "non_payment")
    assert view.suspension_ends_at == view.audit[-1].at + timedelta(days=90)
    assert view.audit[-1].operation == "SuspendCustomerRelationship" and view.audit[-1].reason == "non_payment"
    row = partnerflow.records.current("customers", handle.id)
    assert row and (row["state"], row["suspension_reason"], row["purchase_permission"]) == (
        "suspended",
        "non_payment",
        False,
    )
    shown = await details(handle)
    assert "**suspended**" in shown and r"suspension reason: non\_payment" in shown and "`end_suspended`" in shown
    # Nothing new is bought while suspended; a sales agent may not suspend or resume.
    error = await refused(partnerflow, handle, "set_purchase_permission", {"actor": ADMIN_AGENT, "allowed": True})
    assert error.type == "TransitionNotAllowed" and "suspended" in error.message
    error = await refused(partnerflow, handle, "resume", {"actor": actor("sales_agent")})
    assert error.type == "PermissionDenied"
    assert subjects(partnerflow, ADMIN["email"])[-1] == "Fabrikam suspended its reseller relationship with Contoso Ltd"
    letter = text_of(partnerflow.mail(ADMIN["email"])[-1])
    assert "Reason given: non_payment" in letter
    assert view.suspension_ends_at
    ends = f"relationship ends on {when(view.suspension_ends_at, 'en', 'US')}"  # its own date, not a link's
    assert ends in letter.replace("\n", " ")

    await partnerflow.env.sleep(timedelta(days=90, hours=1))
    view = await partnerflow.wait_for_state(handle, "ended")
    assert (view.audit[-1].operation, view.audit[-1].actor_role) == ("RemovePartnerCustomerRelationship", "system")
    assert view.suspension_reason is None and view.suspension_ends_at is None
    to_customer, to_partner = subjects(partnerflow, ADMIN["email"]), subjects(partnerflow, PARTNER_CONTACT)
    warning = "The suspended relationship of Contoso Ltd with Fabrikam ends"
    assert sum(s.startswith(warning) for s in to_customer) == 3, (to_customer, to_partner)  # 30, 7, 1 days
    assert sum(s.startswith("Your suspended relationship with Contoso Ltd ends") for s in to_partner) == 3
    assert to_customer[-1] == "Fabrikam ended its reseller relationship with Contoso Ltd"
    assert to_partner[-1] == "Your suspended relationship with Contoso Ltd has ended"
    row = partnerflow.records.current("customers", handle.id)
    assert row and (row["state"], row["suspension_reason"]) == ("ended", None)


async def test_a_resumed_relationship_keeps_going_and_a_suspended_one_can_be_ended(partnerflow: Harness) -> None:
    handle = await partnerflow.bring_to("active")
    error = await refused(partnerflow, handle, "suspend", {"actor": ADMIN_AGENT, "reason": "because"})
    assert error.type == "InvalidInput" and "reason" in error.message  # a coded reason, named
    await partnerflow.update(handle, "suspend", {"actor": ADMIN_AGENT, "reason": "compliance"})
    view = await partnerflow.update(handle, "resume", {"actor": actor("global_admin")})
    assert (view.state, view.suspension_reason, view.suspension_ends_at) == ("active", None, None)
    assert subjects(partnerflow, ADMIN["email"])[-1] == "Fabrikam resumed its reseller relationship with Contoso Ltd"
    await partnerflow.env.sleep(timedelta(days=91))  # the suspension's clock stopped with it
    assert (await partnerflow.view(handle)).state == "active"

    await partnerflow.update(handle, "suspend", {"actor": ADMIN_AGENT, "reason": "customer_request"})
    view = await partnerflow.update(handle, "end_relationship", {"actor": ADMIN_AGENT, "reason": "moved on"})
    assert view.state == "ended" and view.audit[-2].to_state == "suspended"


async def test_an_end_refused_for_subscriptions_says_how_many_of_what(partnerflow: Harness) -> None:
    handle = await partnerflow.bring_to("active")
    customer_id = handle.id.split("/")[-1]
    detail = {"Azure plan": 2, "Microsoft 365 E3 (new commerce)": 1}
    partnerflow.records.set_active_subscriptions(
        "public", "p-100", customer_id, 3, now=datetime.now(UTC), detail=detail
    )
    error = await refused(partnerflow, handle, "end_relationship", {"actor": actor()}, validated=False)
    assert error.type == "GuardFailed"
    blocking = "3 active (2 Azure plan, 1 Microsoft 365 E3 (new commerce))"
    assert error.message.endswith(f"no active subscriptions before the relationship ends: {blocking}")
    partnerflow.records.set_active_subscriptions("public", "p-100", customer_id, 1, now=datetime.now(UTC))
    error = await refused(partnerflow, handle, "end_relationship", {"actor": actor()}, validated=False)
    assert error.message.endswith("ends: 1 active")  # a feed without the detail: the count alone


async def test_one_acceptance_links_the_customer_to_the_reseller_and_its_provider(partnerflow: Harness) -> None:
    """Both are told; both lists show the customer; the provider, not the reseller, may end it."""
    provider = Partner(
        id="dist-1",
        name="Northwind Distribution",
        kind=PartnerKind.INDIRECT_PROVIDER,
        contact_email="desk@northwind.example",
    )
    partnerflow.records.put_partner("public", provider, now=datetime.now(UTC))
    reseller = {
        "id": "r-200",
        "name": "Tailspin",
        "kind": "indirect_reseller",
        "indirect_provider_id": "dist-1",
        "contact_email": "ops@tailspin.example",
    }
    handle = await partnerflow.start(partner=reseller, actor=actor(partner_id="r-200", user="sam@tailspin.example"))
    await partnerflow.wait_for_state(handle, "invited")
    view = await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    assert (view.state, view.partner_id, view.indirect_provider_id) == ("active", "r-200", "dist-1")

    assert subjects(partnerflow, "ops@tailspin.example") == ["Contoso Ltd accepted your reseller relationship"]
    assert subjects(partnerflow, "desk@northwind.example") == ["Contoso Ltd accepted Tailspin as its reseller"]
    customer_id = view.customer_id
    for partner_id in ("r-200", "dist-1"):
        [row] = [r for r in partnerflow.records.customer_list("public", partner_id) if r["customer_id"] == customer_id]
        assert (row["partner_id"], row["indirect_provider_id"], row["state"]) == ("r-200", "dist-1", "active")
    assert not [r for r in partnerflow.records.customer_list("public", "p-100") if r["customer_id"] == customer_id]

    for name, extra in (("end_relationship", {}), ("suspend", {"reason": "non_payment"})):
        by_reseller = {"actor": actor("global_admin", partner_id="r-200"), **extra}
        error = await refused(partnerflow, handle, name, by_reseller)
        assert error.type == "PermissionDenied" and "its indirect provider may" in error.message
    error = await refused(partnerflow, handle, "end_relationship", {"actor": actor("global_admin", partner_id="p-100")})
    assert error.type == "PermissionDenied" and "dist-1" in error.message  # another partner: named who may
    by_provider = actor("admin_agent", partner_id="dist-1", user="lee@northwind.example")
    view = await partnerflow.update(handle, "suspend", {"actor": by_provider, "reason": "non_payment"})
    assert view.state == "suspended"
    view = await partnerflow.update(handle, "end_relationship", {"actor": by_provider, "reason": "reseller left"})
    assert view.state == "ended" and view.audit[-1].actor_user == "lee@northwind.example"


async def test_a_direct_partner_s_acceptance_tells_no_provider(partnerflow: Harness) -> None:
    handle = await partnerflow.bring_to("active", partner={"contact_email": PARTNER_CONTACT})
    view = await partnerflow.view(handle)
    assert view.indirect_provider_id is None
    assert [m["To"] for m in partnerflow.mail() if "accepted" in str(m["Subject"])] == [PARTNER_CONTACT]


def test_only_an_indirect_reseller_names_a_provider() -> None:
    """A provider gets rights over the relationships it is named for: only a reseller's names one."""
    direct = {"id": "p-1", "name": "Fabrikam", "kind": "direct", "indirect_provider_id": "dist-1"}
    with pytest.raises(ValueError, match="indirect_provider_id is for an indirect_reseller only"):
        Partner.model_validate(direct, context=STRICT)


async def test_each_reader_is_written_to_in_their_own_language(partnerflow: Harness) -> None:
    """The customer's admin in their country's language; the reseller and its provider in the
    languages the partner registry gives them."""
    provider = Partner(
        id="dist-3",
        name="Northwind",
        kind=PartnerKind.INDIRECT_PROVIDER,
        contact_email="desk@northwind.example",
        locale="ja",
    )
    partnerflow.records.put_partner("public", provider, now=datetime.now(UTC))
    reseller = {
        "id": "r-300",
        "name": "Tailspin",
        "kind": "indirect_reseller",
        "indirect_provider_id": "dist-3",
        "contact_email": "ops@tailspin.example",
        "locale": "fr",
    }
    handle = await partnerflow.start(
        partner=reseller, customer={"country": "DE"}, actor=actor(partner_id="r-300", user="sam@tailspin.example")
    )
    await partnerflow.wait_for_state(handle, "invited")
    assert subjects(partnerflow, ADMIN["email"]) == ["Tailspin lädt Contoso Ltd zu einer Reseller-Beziehung ein"]
    await partnerflow.update(handle, "accept_invitation", accept(partnerflow.token()))
    assert subjects(partnerflow, "ops@tailspin.example") == ["Contoso Ltd a accepté votre relation de revendeur"]
    assert subjects(partnerflow, "desk@northwind.example") == ["Contoso Ltd が Tailspin をリセラーとして承諾しました"]
    [notice] = partnerflow.mail("desk@northwind.example")
    assert notice["Content-Language"] == "ja" and "顧客一覧にも表示" in text_of(notice)
