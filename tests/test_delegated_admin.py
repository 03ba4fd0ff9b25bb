"""The delegated admin (GDAP) lifecycle on the time-skipping server: every transition and timer.

It runs on the same interpreter and activities as the relationship; these tests drive it
through raw JSON, as any caller would, and read back the workflow, the mail and the records.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink, text_of
from partnerflow.states.delegated_admin import DELEGATED_ADMIN
from partnerflow.states.delegated_admin_models import DelegatedAdminView
from partnerflow.testing import (
    ADMIN,
    KIT_KEYS,
    START_OVERRIDES,
    TOKEN_IN_LINK,
    Harness,
    actor,
    client_for,
    letters_sent,
    poll,
    register_partners,
    sign_start,
    sign_update,
    start_input,
    workflow_id_of,
)
from partnerflow.worker import new_worker
from partnerflow.workflows.lifecycles import WORKFLOWS

LC = DELEGATED_ADMIN
Env = tuple[Client, str]
STARTED: list[WorkflowHandle[Any, Any]] = []  # ended by the fixture after each test


def gdap_input(**overrides: Any) -> dict[str, Any]:
    """A valid start as raw JSON: the relationship kit's partner and customer, and GDAP's own fields."""
    body = start_input(actor=actor("admin_agent"))
    body.pop("origin")
    body |= {
        "request_id": "helpdesk",
        "display_name": "Helpdesk and licences",
        "duration": "P730D",
        "roles": ["Helpdesk Administrator", "License Administrator"],
        "auto_extend": "PT0S",
    }
    return body | overrides


@pytest.fixture
async def gdap(
    partnerflow_time_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[Env]:
    client = client_for(partnerflow_time_env)
    acts = Capabilities(
        partnerflow_records,
        Mailer(SmtpSettings(port=partnerflow_mail.port)),
        "http://portal.test",
        "public",
        verifier=KIT_KEYS.verifier(),
    )
    task_queue = f"tq-{uuid.uuid4()}"
    register_partners(partnerflow_records, gdap_input())
    async with new_worker(client, acts, task_queue, workflows=[WORKFLOWS[LC.name]]):
        yield client, task_queue
        # Open ones with pending timers would hold up time skipping for every later test.
        while STARTED:
            with contextlib.suppress(Exception):
                await STARTED.pop().terminate("test finished")


def wid_of(body: dict[str, Any]) -> str:
    return workflow_id_of(LC, body)


async def start(env: Env, body: dict[str, Any] | None = None) -> WorkflowHandle[Any, DelegatedAdminView]:
    client, task_queue = env
    body = sign_start(body or gdap_input(), LC)
    handle = await client.start_workflow(
        LC.workflow_type, body, id=wid_of(body), task_queue=task_queue, result_type=DelegatedAdminView
    )
    STARTED.append(handle)
    view = await handle.execute_update("started", result_type=DelegatedAdminView)
    assert view.state == "created"
    return handle


async def update(
    handle: WorkflowHandle[Any, Any], name: str, payload: dict[str, Any], *, prove: bool = True
) -> DelegatedAdminView:
    view: DelegatedAdminView = await handle.execute_update(
        name, sign_update(payload, name, handle.id) if prove else payload, result_type=DelegatedAdminView
    )
    return view


async def refused(
    handle: WorkflowHandle[Any, Any], name: str, payload: dict[str, Any], *, prove: bool = True
) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await update(handle, name, payload, prove=prove)
    assert isinstance(failed.value.cause, ApplicationError)
    return failed.value.cause


async def locked(env: Env, sink: MailSink, body: dict[str, Any] | None = None) -> tuple[WorkflowHandle[Any, Any], str]:
    """A request locked for approval, and the token of the link mailed to the customer's admin."""
    handle = await start(env, body)
    view = await update(handle, "lock_for_approval", {"actor": actor("admin_agent")})
    assert view.state == "approvalPending" and view.approval_expires_at
    letter = sink.messages()[-1]
    assert letter["To"] == "admin@contoso.example"
    assert "http://portal.test/approval?relationship=delegated-admin%2Fp-100%2F" in text_of(letter)
    [token] = TOKEN_IN_LINK.findall(text_of(letter))
    return handle, token


async def approved(env: Env, sink: MailSink, body: dict[str, Any] | None = None) -> WorkflowHandle[Any, Any]:
    handle, token = await locked(env, sink, body)
    view = await update(handle, "approve", {"token": token, "customer_admin": ADMIN})
    assert view.state in ("approved", "activating", "active")
    return handle


async def state_of(handle: WorkflowHandle[Any, Any], state: str) -> DelegatedAdminView:
    """Wait (in workflow time, not wall time) until the relationship reaches `state`."""
    for _ in range(100):
        view: DelegatedAdminView = await handle.query("state", result_type=DelegatedAdminView)
        if view.state == state:
            return view
        await handle.execute_update("started", result_type=DelegatedAdminView)  # one round trip: the worker moved
    raise AssertionError(f"never reached {state}: {view.state}")


async def _warnings(sink: MailSink, n: int) -> list[str] | None:
    found = [s for s in subjects(sink) if " end " in s]
    return found if len(found) >= n else None


def subjects(sink: MailSink) -> list[str]:
    return [" ".join(str(m["Subject"]).split()) for m in sink.messages()]  # unfolded


async def test_create_update_lock_approve_activate(
    gdap: Env, partnerflow_mail: MailSink, partnerflow_records: Records
) -> None:
    """The request path, as the program walks it, with its records, audit and events."""
    handle = await start(gdap)
    view = await update(handle, "update_roles", {"actor": actor("global_admin"), "roles": ["User Administrator"]})
    assert view.roles == ("User Administrator",)
    handle_token = await update(handle, "lock_for_approval", {"actor": actor("admin_agent")})
    assert handle_token.state == "approvalPending"
    [request] = partnerflow_mail.messages()
    assert request["Subject"] == "Fabrikam asks for admin roles in Contoso Ltd"
    [token] = TOKEN_IN_LINK.findall(text_of(request))

    lookup = await handle.query("approval", {"token": token})
    assert lookup["status"] == "valid" and lookup["company"] == "Contoso Ltd"
    wrong = await refused(handle, "approve", {"token": "wrong-token-000000", "customer_admin": ADMIN})
    assert wrong.type == "GuardFailed"
    # The roles are locked now.
    denial = await refused(handle, "update_roles", {"actor": actor("admin_agent"), "roles": ["Global Reader"]})
    assert denial.type == "TransitionNotAllowed" and "only from: created" in denial.message

    began = (await handle.describe()).start_time
    await update(handle, "approve", {"token": token, "customer_admin": ADMIN})
    view = await state_of(handle, "active")
    assert view.ends_at is not None and timedelta(days=729) < view.ends_at - began < timedelta(days=731)
    assert "Contoso Ltd approved your admin roles" in subjects(partnerflow_mail)
    assert (await handle.query("approval", {"token": token}))["status"] == "accepted"

    row = partnerflow_records.current("entities", handle.id)
    assert row is not None and row["state"] == "active"
    assert row["fields"]["roles"] == ["User Administrator"] and row["fields"]["ends_at"]
    trail = [(r["operation"], r["to_state"]) for r in partnerflow_records.audit_trail(handle.id)]
    assert trail == [
        ("CreateDelegatedAdminRelationship", "created"),
        ("UpdateDelegatedAdminRelationship", "created"),
        ("CreateDelegatedAdminRelationshipRequest", "approvalPending"),
        ("ApproveDelegatedAdminRelationship", "approved"),
        ("ActivateDelegatedAdminRelationship", "activating"),
        ("ActivateDelegatedAdminRelationship", "active"),
    ]
    events = [e["type"] for e in partnerflow_records.events_after("public", "p-100", 0)]
    assert events[-2:] == ["granular-admin-relationship-activating", "granular-admin-relationship-activated"]
    assert "granular-admin-relationship-approved" in events

    described = await handle.describe()
    attrs = described.typed_search_attributes
    assert any(p.key.name == "DelegatedAdminState" and p.value == "active" for p in attrs)
    assert any(p.key.name == "AdminAccessEndsAt" and p.value == view.ends_at for p in attrs)


async def test_a_one_day_term_warns_then_expires_without_extending_global_admin(
    gdap: Env, partnerflow_mail: MailSink, partnerflow_time_env: WorkflowEnvironment, partnerflow_records: Records
) -> None:
    """P1D with Global Administrator: auto-extension is refused, the warning goes to both sides,
    and the term runs out to `expired`, which nothing can undo."""
    with_ga = {"roles": ["Global Administrator"], "duration": "P1D"}
    client, task_queue = gdap
    refused_body = sign_start(gdap_input(**with_ga, auto_extend="P180D", request_id="ga-extending"), LC)
    handle = await client.start_workflow(LC.workflow_type, refused_body, id=wid_of(refused_body), task_queue=task_queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidInput"
    assert "auto_extend must be PT0S when roles include Global Administrator" in cause.message

    handle = await approved(gdap, partnerflow_mail, gdap_input(**with_ga))
    view = await state_of(handle, "expiring")  # a one-day term is in its last 30 days at once
    warned = await poll(lambda: _warnings(partnerflow_mail, 2))
    assert [w.split(" end ")[0] for w in sorted(warned)] == [
        "The admin roles of Fabrikam in Contoso Ltd",
        "Your admin roles in Contoso Ltd",
    ]  # the 1-day warning only: the 30- and 7-day moments were past before the term began
    [to_customer] = [w for w in warned if w.startswith("The admin roles")]
    assert view.ends_at is not None and str(view.ends_at.year) in to_customer
    assert " EST" in to_customer or " EDT" in to_customer  # in the customer's own time zone (US: Eastern)
    await partnerflow_time_env.sleep(timedelta(days=1, hours=1))
    final = await handle.result()
    assert final.state == "expired" and final.ends_at is None
    await letters_sent(partnerflow_records)
    ended = {"The admin roles of Fabrikam in Contoso Ltd have ended", "Your admin roles in Contoso Ltd have ended"}
    assert ended <= set(subjects(partnerflow_mail))
    assert view.roles == ("Global Administrator",)
    assert [a.operation for a in final.audit][-1] == "ExpireDelegatedAdminRelationship"


async def test_auto_extension_renews_by_180_days_with_warnings_each_term(
    gdap: Env, partnerflow_mail: MailSink, partnerflow_time_env: WorkflowEnvironment, partnerflow_records: Records
) -> None:
    handle = await approved(gdap, partnerflow_mail, gdap_input(duration="P60D", auto_extend="P180D"))
    first = await state_of(handle, "active")
    assert first.ends_at is not None
    await partnerflow_time_env.sleep(timedelta(days=61))
    renewed = await state_of(handle, "active")
    assert renewed.ends_at == first.ends_at + timedelta(days=180)  # from the old end, not the timer's moment
    await letters_sent(partnerflow_records)
    letters = subjects(partnerflow_mail)
    assert letters.count("Your admin roles in Contoso Ltd end " + letters[-2].rsplit(" end ", 1)[-1]) >= 1
    partner_warnings = [s for s in letters if s.startswith("Your admin roles in Contoso Ltd end ")]
    assert len(partner_warnings) == 3  # 30, 7 and 1 days before the first end
    assert "The admin roles of Fabrikam in Contoso Ltd were extended" in letters
    assert [a.operation for a in renewed.audit][-1] == "ExtendDelegatedAdminRelationship"


async def test_an_unapproved_request_is_reminded_then_expires(
    gdap: Env, partnerflow_mail: MailSink, partnerflow_time_env: WorkflowEnvironment, partnerflow_records: Records
) -> None:
    handle, token = await locked(gdap, partnerflow_mail)
    await partnerflow_time_env.sleep(timedelta(days=91))
    final = await handle.result()
    assert final.state == "expired"
    await letters_sent(partnerflow_records)
    letters = subjects(partnerflow_mail)
    assert letters.count("Reminder: Fabrikam asks for admin roles in Contoso Ltd") == 3  # 30, 7, 1 days before
    assert letters[-1] == "Your request for admin roles in Contoso Ltd expired"
    assert (await handle.query("approval", {"token": token}))["status"] == "expired"


async def test_the_customer_declines(gdap: Env, partnerflow_mail: MailSink, partnerflow_records: Records) -> None:
    handle, token = await locked(gdap, partnerflow_mail)
    view = await update(handle, "decline", {"token": token, "customer_admin": ADMIN, "reason": "not now"})
    assert view.state == "terminated"
    await letters_sent(partnerflow_records)
    assert subjects(partnerflow_mail)[-1] == "Contoso Ltd declined your request for admin roles"
    assert "Reason given: not now" in text_of(partnerflow_mail.messages()[-1])


async def test_the_partner_terminates_and_both_sides_are_told(
    gdap: Env, partnerflow_mail: MailSink, partnerflow_records: Records
) -> None:
    handle = await approved(gdap, partnerflow_mail)
    await state_of(handle, "active")
    await update(handle, "terminate", {"actor": actor("admin_agent"), "reason": "contract over"})
    final = await handle.result()
    assert final.state == "terminated"
    assert [a.to_state for a in final.audit][-3:] == ["terminationRequested", "terminating", "terminated"]
    await letters_sent(partnerflow_records)
    told = {m["To"]: m["Subject"] for m in partnerflow_mail.messages()[-2:]}
    assert told == {
        "admin@contoso.example": "The admin roles of Fabrikam in Contoso Ltd were ended",
        "sam@fabrikam.example": "Your admin roles in Contoso Ltd were ended",
    }


async def test_the_customer_terminates_with_its_portal_assertion(
    gdap: Env, partnerflow_mail: MailSink, partnerflow_records: Records
) -> None:
    handle = await approved(gdap, partnerflow_mail)
    customer_id = handle.id.split("/")[2]
    admin = {**ADMIN, "customer_id": customer_id}
    # Without the customer portal's assertion, nobody may speak for the customer.
    unproven = await refused(handle, "terminate_by_customer", {"customer_admin": admin}, prove=False)
    assert unproven.type == "PermissionDenied"
    other = await refused(handle, "terminate_by_customer", {"customer_admin": {**admin, "customer_id": "c-other"}})
    assert other.type in ("PermissionDenied", "GuardFailed")
    await update(handle, "terminate_by_customer", {"customer_admin": admin, "reason": "we moved"})
    final = await handle.result()
    assert final.state == "terminated"
    row = partnerflow_records.current("entities", handle.id)
    assert row is not None and row["fields"]["terminated_by"] == "customer"


async def test_who_may_and_what_is_refused(gdap: Env, partnerflow_mail: MailSink) -> None:
    """Sales agents and helpdesk agents may not touch admin rights; bad input names its field."""
    client, task_queue = gdap
    for role in ("sales_agent", "helpdesk_agent"):
        body = sign_start(gdap_input(actor=actor(role), request_id=f"by-{role.replace('_', '-')}"), LC)
        handle = await client.start_workflow(LC.workflow_type, body, id=wid_of(body), task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        assert isinstance(failed.value.cause, ApplicationError) and failed.value.cause.type == "PermissionDenied"
    for field, value, words in (
        ("duration", "P3Y", "duration: must be between P1D and P2Y"),
        ("roles", ["Global Administrator", "Chief Wizard"], "roles.1"),
        ("roles", [], "roles"),
        ("auto_extend", "P90D", "auto_extend: must be PT0S (off) or P180D"),
        ("request_id", "Not An Id", "request_id"),
    ):
        body = gdap_input(**{"request_id": f"bad-{uuid.uuid4().hex[:8]}", field: value})
        handle = await client.start_workflow(LC.workflow_type, body, id=wid_of(body), task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "InvalidInput" and words in cause.message
    handle = await start(gdap, gdap_input(auto_extend="P180D", request_id="extending"))
    denial = await refused(handle, "update_roles", {"actor": actor("admin_agent"), "roles": ["Global Administrator"]})
    assert denial.type == "GuardFailed" and "Global Administrator only when auto_extend is PT0S" in denial.message


async def test_access_assignments_take_approved_roles_only_and_end_with_the_relationship(
    gdap: Env, partnerflow_mail: MailSink, partnerflow_records: Records
) -> None:
    handle = await approved(gdap, partnerflow_mail)
    await state_of(handle, "active")
    admin = actor("admin_agent")
    outside = await refused(
        handle,
        "assign",
        {"actor": admin, "group_id": "helpdesk-l1", "roles": ["Helpdesk Administrator", "Global Reader"]},
    )
    assert outside.type == "GuardFailed" and "Global Reader is not approved" in outside.message
    view = await update(
        handle, "assign", {"actor": admin, "group_id": "helpdesk-l1", "roles": ["Helpdesk Administrator"]}
    )
    assert [(a.group_id, a.roles, a.status) for a in view.assignments] == [
        ("helpdesk-l1", ("Helpdesk Administrator",), "active")
    ]
    again = await refused(
        handle, "assign", {"actor": admin, "group_id": "helpdesk-l1", "roles": ["License Administrator"]}
    )
    assert again.type == "GuardFailed" and "update_assignment" in again.message
    unknown = await refused(
        handle, "update_assignment", {"actor": admin, "group_id": "nobody", "roles": ["License Administrator"]}
    )
    assert unknown.type == "GuardFailed" and "assign it first" in unknown.message
    changed = await update(
        handle, "update_assignment", {"actor": admin, "group_id": "helpdesk-l1", "roles": ["License Administrator"]}
    )
    assert changed.assignments[0].roles == ("License Administrator",)
    await update(handle, "assign", {"actor": admin, "group_id": "licences", "roles": ["License Administrator"]})
    gone = await update(handle, "delete_assignment", {"actor": admin, "group_id": "licences"})
    assert {a.group_id: a.status for a in gone.assignments} == {"helpdesk-l1": "active", "licences": "deleted"}
    row = partnerflow_records.current("entities", handle.id)
    assert row is not None and row["fields"]["assignments"]["licences"]["status"] == "deleted"
    events = [e["type"] for e in partnerflow_records.events_after("public", "p-100", 0)]
    assert events[-4:] == [
        "granular-admin-access-assignment-created",
        "granular-admin-access-assignment-updated",
        "granular-admin-access-assignment-created",
        "granular-admin-access-assignment-deleted",
    ]

    await update(handle, "terminate", {"actor": admin})
    final = await handle.result()
    assert {a.group_id: a.status for a in final.assignments} == {"helpdesk-l1": "deleted", "licences": "deleted"}
    trail = [r["to_state"] for r in partnerflow_records.audit_trail(handle.id)]
    assert trail[-3:] == ["terminationRequested", "terminating", "terminated"]


async def test_ending_the_reseller_relationship_terminates_the_customer_s_admin_access(
    partnerflow: Harness, partnerflow_records: Records
) -> None:
    """The program's rule, as a cascade: the reseller relationship's end tells the customer's open
    delegated admin relationships, each of which checks the records before it ends."""
    h = partnerflow
    reseller = await h.bring_to("active")
    customer = {"id": reseller.id.split("/")[2]}
    admin_access = await h.bring_to("active", lifecycle=LC, customer=customer)
    planned = await h.bring_to("created", lifecycle=LC, customer=customer, request_id="planned")
    elsewhere = await h.bring_to("active", lifecycle=LC)  # another customer's: untouched

    # A signal proves nothing: while the reseller relationship is active, a forged one ends nothing,
    # and a trigger that is no cascade's is refused.
    await admin_access.signal("cascade", "end_with_reseller")
    await admin_access.signal("cascade", "terminate")
    await admin_access.signal("cascade", {"not": "a trigger"})  # dropped by the SDK, never a failed task
    assert (await h.view(admin_access)).state == "active"

    await h.update(reseller, "end_relationship", {"actor": actor(), "reason": "contract over"})
    await h.wait_for_state(admin_access, "terminationRequested")
    await h.env.sleep(timedelta(minutes=3))  # its steps (the kit's minute each)
    final = await h.view(admin_access)
    assert final.state == "terminated"
    assert [a.operation for a in final.audit][-3:] == [
        "TerminateDelegatedAdminRelationship",
        "TerminatingDelegatedAdminRelationship",
        "TerminatedDelegatedAdminRelationship",
    ]
    assert final.audit[-3].actor_role == "system"
    row = partnerflow_records.current("entities", admin_access.id)
    assert row is not None and row["fields"]["terminated_by"] == "reseller_relationship_ended"
    assert (await h.view(planned)).state == "terminated"
    assert (await h.view(elsewhere)).state == "active"


CARRIED = {
    "request_id": "with-invitation",
    "display_name": "Helpdesk",
    "duration": "P90D",
    "roles": ["Helpdesk Administrator"],
}


async def test_an_invitation_carries_a_request_that_its_answer_approves_or_declines(partnerflow: Harness) -> None:
    """One visit: accepting the reseller invitation approves the admin roles it carried, and
    declining it declines them; a request carried by no invitation waits for its own answer."""
    h = partnerflow
    outcomes = {}
    for answer in ("accept_invitation", "decline_invitation"):
        customer = {"id": f"c-{uuid.uuid4().hex[:12]}"}
        carried = await h.start(
            lifecycle=LC,
            **{**START_OVERRIDES["create"], "request_id": "with-invitation"},
            customer=customer,
            with_invitation=True,
        )
        waiting = await h.wait_for_state(carried, "approvalPending")
        assert not h.tokens(carried.id), "no link of its own: the invitation carries it"
        assert waiting.approval_expires_at is None
        invitation = await h.start(customer=customer, delegated_admin=CARRIED, actor=actor("admin_agent"))
        await h.wait_for_state(invitation, "invited")
        assert (await h.view(invitation)).admin_request == "with-invitation"
        await h.update(invitation, answer, h.payload(answer, customer["id"]))
        await h.env.sleep(timedelta(minutes=3))  # the kit's minute per step
        outcomes[answer] = (await h.view(carried)).state
    assert outcomes == {"accept_invitation": "active", "decline_invitation": "terminated"}


async def test_a_cascade_signal_without_one_trigger_never_fails_a_task(gdap: Env, partnerflow_mail: MailSink) -> None:
    """`cascade` is a signal anyone with namespace access can send, with any arguments."""
    handle = await approved(gdap, partnerflow_mail)
    await state_of(handle, "active")
    await handle.signal("cascade")
    await handle.signal("cascade", args=["end_with_reseller", "extra"])
    await handle.signal("cascade", 42)

    async def settled() -> list[str] | None:
        kinds = [EventType.Name(e.event_type) for e in (await handle.fetch_history()).events]
        last_signal = max(i for i, k in enumerate(kinds) if k == "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED")
        after = kinds[last_signal:]
        done = {"EVENT_TYPE_WORKFLOW_TASK_COMPLETED", "EVENT_TYPE_WORKFLOW_TASK_FAILED"}
        return kinds if done & set(after) else None

    kinds = await poll(settled)
    assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" not in kinds
    view = await update(
        handle, "assign", {"actor": actor("admin_agent"), "group_id": "g1", "roles": ["Helpdesk Administrator"]}
    )
    assert view.state == "active" and view.assignments[0].group_id == "g1"


async def test_a_request_the_customer_never_saw_is_withdrawn_without_a_letter(
    gdap: Env, partnerflow_mail: MailSink
) -> None:
    handle = await start(gdap)
    view = await update(handle, "terminate", {"actor": actor("admin_agent"), "reason": "asked too early"})
    assert view.state == "terminated" and [a.to_state for a in view.audit] == ["created", "terminated"]
    assert partnerflow_mail.messages() == []
