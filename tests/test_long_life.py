"""A relationship that lives for years: thousands of changes, a bounded history (continue-as-new)."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from partnerflow.testing import Harness, actor, start_input

pytestmark = pytest.mark.server

TOGGLES = 5000


async def test_five_thousand_permission_toggles_keep_history_bounded(partnerflow_live: Harness) -> None:
    """State, audit and records stay right across runs; no run's history nears the limit."""
    handle = await partnerflow_live.bring_to("active")
    admin = actor("admin_agent")
    for i in range(TOGGLES):
        view = await partnerflow_live.update(handle, "set_purchase_permission", {"actor": admin, "allowed": i % 2 == 0})
    assert view.state == "active" and view.purchase_permission is False  # an even number of toggles
    assert [a.operation for a in view.audit][-2:] == ["CreateSelfServePolicy", "DeleteSelfServePolicy"]
    assert view.audit[-1].seq == TOGGLES + 2

    runs = [w async for w in partnerflow_live.client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 2, "continue-as-new never happened"
    for run in runs:
        history = await partnerflow_live.client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()
        assert len(history.events) < 10_000, "each run's history stays well under the 51,200 hard limit"
    trail = partnerflow_live.records.audit_trail(handle.id)
    assert len(trail) == TOGGLES + 2 and len({r["change_id"] for r in trail}) == TOGGLES + 2
    row = partnerflow_live.records.customer("public", "p-100", handle.id.split("/")[-1])
    assert row and (row["version"], row["purchase_permission"]) == (TOGGLES + 2, False)
    # The continued run still ends and reinstates like any other.
    view = await partnerflow_live.update(handle, "end_relationship", {"actor": actor()})
    assert view.state == "ended" and view.reinstated_count == 0


async def test_a_caller_cannot_start_a_relationship_with_carried_state(partnerflow_live: Harness) -> None:
    """`continued` is partnerflow's own: a start that sets it fails, writing nothing."""
    handle = await partnerflow_live.start(start_input(continued={"state": "active"}))
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert "continued is set by partnerflow itself" in str(caught.value.cause)
    assert partnerflow_live.records.audit_trail(handle.id) == []
