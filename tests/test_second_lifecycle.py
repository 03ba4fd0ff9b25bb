"""A new lifecycle is a declaration: the approval lifecycle (tests/approval) runs on the same
interpreter and activities as the relationship, with nothing under workflows/ or activities/
naming it, and nothing there naming any lifecycle's triggers, states, letters or fields."""

from __future__ import annotations

import ast
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink, text_of
from partnerflow.states.declaration import Lifecycle
from partnerflow.states.lifecycles import LIFECYCLES
from partnerflow.testing import (
    ADMIN,
    KIT_KEYS,
    TOKEN_IN_LINK,
    actor,
    client_for,
    letters_sent,
    register_partners,
    sign_start,
    sign_update,
    start_input,
)
from partnerflow.worker import new_worker
from tests.approval.declaration import APPROVAL, ApprovalView
from tests.approval.workflow import ApprovalWorkflow

ROOT = Path(__file__).resolve().parent.parent
ENGINE = sorted((ROOT / "workflows").glob("*.py")) + sorted((ROOT / "activities").glob("*.py"))


def names_of(lifecycle: Lifecycle) -> set[str]:
    """Every trigger, state, letter (a Send effect) and guard a lifecycle declares."""
    return (
        {r.trigger for r in lifecycle.rows} | set(lifecycle.states) | set(lifecycle.letters) | set(lifecycle.guards())
    )


def string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    }


@pytest.mark.parametrize("path", ENGINE, ids=[p.relative_to(ROOT).as_posix() for p in ENGINE])
def test_the_engine_names_no_lifecycle(path: Path) -> None:
    """No trigger, state, letter or guard of any lifecycle is a literal in the engine."""
    declared = set().union(*(names_of(lc) for lc in (*LIFECYCLES.values(), APPROVAL)))
    found = string_literals(path) & declared
    if path.name == "records.py":
        found -= {"active"}  # the billing feed's count column (subscriptions.active), not a state
    assert not found
    assert "tests.approval" not in path.read_text()


@pytest.fixture
async def approval(
    partnerflow_time_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[tuple[Client, str]]:
    client = client_for(partnerflow_time_env)
    acts = Capabilities(
        partnerflow_records,
        Mailer(SmtpSettings(port=partnerflow_mail.port)),
        "http://portal.test",
        "public",
        verifier=KIT_KEYS.verifier(),
    )
    acts.lifecycles = {**LIFECYCLES, APPROVAL.name: APPROVAL}
    task_queue = f"tq-{uuid.uuid4()}"
    register_partners(partnerflow_records, start_input())
    async with new_worker(client, acts, task_queue, workflows=[ApprovalWorkflow]):
        yield client, task_queue


async def _start(client: Client, task_queue: str) -> WorkflowHandle[Any, Any]:
    body = sign_start(start_input(actor=actor("admin_agent")), APPROVAL)
    wid = APPROVAL.workflow_id.format(partner_id="p-100", customer_id=body["customer"]["id"])
    handle = await client.start_workflow(
        APPROVAL.workflow_type, body, id=wid, task_queue=task_queue, result_type=ApprovalView
    )
    view = await handle.execute_update("started", result_type=ApprovalView)  # the start's change is made
    assert view.state == "requested"
    return handle


async def test_the_declared_approval_runs_from_link_to_approval(
    approval: tuple[Client, str], partnerflow_mail: MailSink, partnerflow_records: Records
) -> None:
    """Its link letter, its token guard, its fields, its records and its partner letter all work."""
    client, task_queue = approval
    handle = await _start(client, task_queue)
    [request] = partnerflow_mail.messages()
    assert request["Subject"] == "Fabrikam asks Contoso Ltd for approval"
    assert "http://portal.test/approval?relationship=approval%2Fp-100%2F" in text_of(request)
    [token] = TOKEN_IN_LINK.findall(text_of(request))

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("approve", {"token": "wrong", "customer_admin": ADMIN, "accept_agreement": True})
    assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == "GuardFailed"

    view = await handle.execute_update(
        "approve", {"token": token, "customer_admin": ADMIN, "accept_agreement": True}, result_type=ApprovalView
    )
    assert (view.state, view.approvals, view.note) == ("approved", 1, "approved by link")
    await letters_sent(partnerflow_records)  # the partner's letter goes with the change, by the relay
    assert [m["Subject"] for m in partnerflow_mail.messages()][-1] == "Contoso Ltd approved"
    row = partnerflow_records.current("entities", handle.id)
    assert row and row["state"] == "approved" and row["fields"] == {"approvals": 1, "note": "approved by link"}
    trail = [r["operation"] for r in partnerflow_records.audit_trail(handle.id)]
    assert trail == ["CreateApprovalRequest", "ApproveRequest"]

    revoke = sign_update({"actor": actor("global_admin")}, "revoke", handle.id)
    view = await handle.execute_update("revoke", revoke, result_type=ApprovalView)
    assert view.state == "revoked"
    assert (await handle.result()).note == "revoked"


async def test_the_declared_deadline_reminds_then_lapses(
    approval: tuple[Client, str], partnerflow_time_env: WorkflowEnvironment, partnerflow_mail: MailSink
) -> None:
    """Reminders before the end, then the Timer row: the same deadline machinery as the relationship."""
    client, task_queue = approval
    handle = await _start(client, task_queue)
    await partnerflow_time_env.sleep(timedelta(days=31))
    final = await handle.result()
    assert final.state == "lapsed"
    subjects = [m["Subject"] for m in partnerflow_mail.messages()]
    assert subjects.count("Still waiting: Fabrikam's request") == 2
    [token] = TOKEN_IN_LINK.findall(text_of(partnerflow_mail.messages()[0]))
    lookup = await handle.query("approval", {"token": token})
    assert lookup["status"] == "expired"
