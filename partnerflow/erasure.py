"""Erase one customer's personal data for a data-protection request (GDPR art. 17 and alike).

Only for a relationship that is over: ended, an invitation that expired unanswered, or closed
in a final state (declined, cancelled, a referral declined or expired); never while it is
referred, invited, active or suspended, nor while an activity of it is still running. Then:
its Temporal histories are deleted (every run of its workflow id: they hold the names and
addresses), the records keep what happened, when and in which role but no name, address or
reason, and the local mail sink (`make run`'s) loses its copies of the emails. An ended
relationship's workflow, which waits to be reinstated, is closed first: an erased customer is
invited afresh, never reinstated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from partnerflow.activities.records import Records
from partnerflow.states.models import RelationshipView, State, workflow_id
from partnerflow.states.relationship import RELATIONSHIP

#: States a relationship may be erased in: over, or never begun.
OVER = frozenset({*RELATIONSHIP.final, State.ENDED, State.INVITATION_EXPIRED})


class StillOpen(ValueError):
    """The relationship is not over (or still at work): nothing was erased."""


class Unknown(LookupError):
    """No such relationship in this cloud: nothing was erased."""


@dataclass
class Erased:
    workflow_id: str
    runs_deleted: int = 0  # deletions the server accepted; it deletes them in the background
    records: dict[str, int] = field(default_factory=dict)
    emails_deleted: int = 0


async def erase(
    client: Client, records: Records, cloud: str, partner_id: str, customer_id: str, maildir: Path | None = None
) -> Erased:
    """Safe to run again: what a first run erased stays erased, and nothing is erased twice."""
    wid = workflow_id(partner_id, customer_id)
    done = Erased(wid)
    handle = client.get_workflow_handle(wid)
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        described = None
    listed = records.customer(cloud, partner_id, customer_id)
    if described is None and listed is None:
        raise Unknown(f"erase: no relationship {wid} in the {cloud} cloud (nothing was erased)")
    if listed is not None and listed["state"] not in OVER:
        raise StillOpen(f"erase: the relationship {wid} is {listed['state']}: end it first (nothing was erased)")
    if described is not None and described.status is WorkflowExecutionStatus.RUNNING:
        view: RelationshipView = await handle.query("state", result_type=RelationshipView)
        if view.state not in OVER:
            raise StillOpen(f"erase: the relationship {wid} is {view.state.value}: end it first (nothing was erased)")
        if described.raw_description.pending_activities:  # a letter on its way would write its address again
            raise StillOpen(f"erase: {wid} is still sending or recording: try again in a minute (nothing was erased)")
        await handle.terminate(reason="personal data erased on request")
    runs = {execution.run_id async for execution in client.list_workflows(f"WorkflowId = '{wid}'")}
    if described is not None:
        runs.add(described.run_id)  # the latest, whatever visibility says yet
    for run_id in sorted(runs):
        request = DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=wid, run_id=run_id)
        )
        try:
            await client.workflow_service.delete_workflow_execution(request)
            done.runs_deleted += 1
        except RPCError as error:  # deleted meanwhile (a run again while the server still deletes)
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
    message_ids = records.outbox_message_ids(cloud, wid)
    done.records = records.erase_customer(cloud, partner_id, customer_id, now=datetime.now(UTC))
    if maildir is not None:
        done.emails_deleted = _forget_mail(maildir, message_ids)
    return done


def _forget_mail(maildir: Path, message_ids: set[str]) -> int:
    """The sink's copies of the relationship's emails, found by the Message-IDs the outbox gave them."""
    gone = 0
    for folder in ("new", "cur"):
        for path in sorted((maildir / folder).glob("*")) if (maildir / folder).is_dir() else ():
            with path.open("rb") as file:
                headers = BytesHeaderParser().parse(file)
            found = str(headers.get("Message-ID", "")).strip()
            if found and found in message_ids:
                path.unlink()
                gone += 1
    return gone
