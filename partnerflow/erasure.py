"""Erase one customer's personal data for a data-protection request (GDPR art. 17 and alike).

Only for a relationship that is over: ended, or closed in a final state (declined,
cancelled, an expired referral); never while it is invited, active or suspended. Then:
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

from activities.records import Records
from states.models import RelationshipView, State, workflow_id
from states.relationship import RELATIONSHIP

#: States a relationship may be erased in: over, or never begun.
OVER = frozenset({*RELATIONSHIP.final, State.ENDED, State.INVITATION_EXPIRED})


class StillOpen(ValueError):
    """The relationship is not over: nothing was erased."""


@dataclass
class Erased:
    workflow_id: str
    runs_deleted: int = 0
    records: dict[str, int] = field(default_factory=dict)
    emails_deleted: int = 0


async def erase(
    client: Client, records: Records, cloud: str, partner_id: str, customer_id: str, maildir: Path | None = None
) -> Erased:
    wid = workflow_id(partner_id, customer_id)
    done = Erased(wid)
    handle = client.get_workflow_handle(wid)
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        described = None
    if described is not None and described.status is WorkflowExecutionStatus.RUNNING:
        view: RelationshipView = await handle.query("state", result_type=RelationshipView)
        if view.state not in OVER:
            raise StillOpen(f"erase: the relationship {wid} is {view.state.value}: end it first (nothing was erased)")
        await handle.terminate(reason="personal data erased on request")
    runs = {execution.run_id async for execution in client.list_workflows(f"WorkflowId = '{wid}'")}
    if described is not None:
        runs.add(described.run_id)  # the latest, whatever visibility says yet
    for run_id in sorted(runs):
        request = DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=wid, run_id=run_id)
        )
        await client.workflow_service.delete_workflow_execution(request)
        done.runs_deleted += 1
    message_ids = records.outbox_message_ids(wid)
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
            if str(headers.get("Message-ID", "")).strip() in message_ids:
                path.unlink()
                gone += 1
    return gone
