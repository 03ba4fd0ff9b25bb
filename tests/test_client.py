"""The typed client against the dev server: idempotent starts, typed errors, update-with-start."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from partnerflow.client import (
    NotFound,
    PermissionDenied,
    RelationshipError,
    Relationships,
    TransitionNotAllowed,
    Unavailable,
    translate,
)
from partnerflow.states.models import (
    AcceptInvitation,
    Cloud,
    CustomerAdmin,
    DeclineInvitation,
    PartnerCommand,
    ReasonedCommand,
    SetPurchasePermission,
    StartRelationship,
    Timers,
)
from partnerflow.testing import ADMIN, KIT_KEYS, Harness, actor, client_for, start_input

pytestmark = pytest.mark.server


def relationships(env: WorkflowEnvironment, **kw: object) -> Relationships:
    kw.setdefault("signer", KIT_KEYS.partners)
    return Relationships({cloud: client_for(env, cloud) for cloud in Cloud}, **kw)  # type: ignore[arg-type]


async def test_inviting_twice_is_one_relationship_and_one_email(
    partnerflow_live_contract_queue: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    """The answer comes once the invitation is recorded (its email queued with it, which the
    worker's relay sends just after); a repeat changes nothing and sends nothing."""
    h = partnerflow_live_contract_queue
    client = relationships(partnerflow_dev_env)
    start = StartRelationship.model_validate(start_input())
    view = await client.start(start)
    assert view.state == "invited" and [a.operation for a in view.audit] == ["CreateCustomerInvitation"]
    await h.letters_sent()
    assert len(h.mail()) == 1
    again = await client.start(start)
    await h.letters_sent()
    assert again.audit == view.audit and len(h.mail()) == 1


async def test_a_refused_start_raises_a_typed_error(
    partnerflow_live_contract_queue: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    client = relationships(partnerflow_dev_env)
    start = StartRelationship.model_validate(start_input(actor=actor("helpdesk_agent")))
    with pytest.raises(PermissionDenied) as caught:
        await client.start(start)
    assert caught.value.rule == "role" and "helpdesk_agent may not invite" in caught.value.message
    assert partnerflow_live_contract_queue.mail() == []


async def test_updates_return_the_view_or_a_typed_error(
    partnerflow_live_contract_queue: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    client = relationships(partnerflow_dev_env)
    start = StartRelationship.model_validate(start_input())
    await client.start(start)
    with pytest.raises(PermissionDenied):
        await client.update(
            Cloud.PUBLIC,
            start.workflow_id,
            "resend_invitation",
            PartnerCommand.model_validate({"actor": actor("helpdesk_agent")}),
        )
    with pytest.raises(TransitionNotAllowed):
        await client.update(
            Cloud.PUBLIC,
            start.workflow_id,
            "set_purchase_permission",
            SetPurchasePermission.model_validate({"actor": actor("admin_agent"), "allowed": True}),
        )
    with pytest.raises(NotFound):
        await client.state(Cloud.PUBLIC, "p-100", "nobody-here")
    view = await client.update(
        Cloud.PUBLIC,
        start.workflow_id,
        "cancel_invitation",
        ReasonedCommand.model_validate({"actor": actor()}),
    )
    assert view.state == "cancelled"


async def test_an_update_right_behind_the_start_waits_for_it(
    partnerflow_live_contract_queue: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    """A cancel sent before the start's change is made lands after it, never under it."""
    h = partnerflow_live_contract_queue
    handle = await h.start()
    view = await h.update(handle, "cancel_invitation", {"actor": actor()})
    assert view.state == "cancelled"
    assert [a.operation for a in view.audit] == ["CreateCustomerInvitation", "CancelCustomerInvitation"]
    assert (await handle.result()).state == "cancelled"
    assert [r["to_state"] for r in h.records.audit_trail(handle.id)] == ["invited", "cancelled"]


async def test_timers_from_the_configuration_apply_when_a_start_sets_none(
    partnerflow_live_contract_queue: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    client = relationships(
        partnerflow_dev_env, default_timers=Timers(invitation_ttl=timedelta(days=3), reminders_before=())
    )
    view = await client.start(StartRelationship.model_validate(start_input()))
    assert view.invitation_expires_at and view.audit
    assert view.invitation_expires_at - view.audit[0].at == timedelta(days=3)


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (RPCStatusCode.UNAVAILABLE, "tcp connect error", Unavailable),
        (RPCStatusCode.UNKNOWN, "transport error", Unavailable),  # the connection dropped mid-call
        (RPCStatusCode.ABORTED, "Shard is owned by another host", Unavailable),
        (RPCStatusCode.RESOURCE_EXHAUSTED, "namespace rate limit", Unavailable),
        (RPCStatusCode.NOT_FOUND, "workflow not found", NotFound),
        (RPCStatusCode.INVALID_ARGUMENT, "bad request", RelationshipError),
        (RPCStatusCode.PERMISSION_DENIED, "request unauthorized", RelationshipError),
        # Not a refusal: the change may have been made (a restart, a lost shard, a closed stream),
        # or the server cannot answer for the moment (a query while a workflow task is held up).
        (RPCStatusCode.FAILED_PRECONDITION, "Cannot query workflow due to Workflow Task in failed state", Unavailable),
        (RPCStatusCode.UNKNOWN, "stream closed", Unavailable),
        (RPCStatusCode.INTERNAL, "context canceled", Unavailable),
    ],
)
def test_server_errors_become_typed_errors_a_caller_can_retry_on(
    status: RPCStatusCode, message: str, expected: type[RelationshipError]
) -> None:
    translated = translate(RPCError(message, status, b""))
    assert type(translated) is expected and message in str(translated)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            WorkflowUpdateFailedError(ApplicationError("no", {"rule": "state"}, type="TransitionNotAllowed")),
            TransitionNotAllowed,
        ),
        # The server's own failures of an update: the run closed or continued under it.
        (
            WorkflowUpdateFailedError(ApplicationError("completed first", type="AcceptedUpdateCompletedWorkflow")),
            Unavailable,
        ),
        (WorkflowUpdateFailedError(CancelledError("cancelled")), Unavailable),
        (WorkflowQueryFailedError("query failed: workflow task failed"), Unavailable),
        (RPCTimeoutOrCancelledError("timed out"), Unavailable),
    ],
)
def test_an_unknown_outcome_is_never_a_final_refusal(error: Exception, expected: type[RelationshipError]) -> None:
    translated = translate(error)
    assert type(translated) is expected
    if expected is TransitionNotAllowed:
        assert translated.rule == "state"


async def test_the_losing_answer_of_a_race_is_transition_not_allowed(
    partnerflow_live_contract_queue: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    """Declined first (the relationship ends), accepted second: the second is not allowed now,
    which is not the same as a relationship that does not exist."""
    h = partnerflow_live_contract_queue
    handle = await h.start()
    await h.wait_for_state(handle, "invited")
    token, admin = h.token(), CustomerAdmin.model_validate(ADMIN)
    client = relationships(partnerflow_dev_env)
    await client.decline_invitation(Cloud.PUBLIC, handle.id, DeclineInvitation(token=token, customer_admin=admin))
    assert (await handle.result()).state == "declined"
    accept = AcceptInvitation(token=token, customer_admin=admin, accept_agreement=True)
    with pytest.raises(TransitionNotAllowed, match="has ended"):
        await client.accept_invitation(Cloud.PUBLIC, handle.id, accept)
