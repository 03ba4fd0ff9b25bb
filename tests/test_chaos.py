"""`make chaos` in small: whole lives while the worker and the page are killed, the server
restarted (while lives are mid-query, and again mid-verification), SMTP and the database down
for a while. Nothing lost, nothing twice, nothing failed, and the run itself never breaks down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability.chaos import Chaos, Plan
from reliability.verify import verify

pytestmark = pytest.mark.server


async def test_every_life_completes_exactly_once_under_faults(tmp_path: Path) -> None:
    plan = Plan(
        relationships=10,
        concurrency=10,
        kill_every_s=(1.5, 3.5),  # the lives take ~20 s now: at least two kills within them
        page_kill_every_s=(2.0, 5.0),
        smtp_down_s=8.0,
        db_down_s=5.0,
        receiver_down_s=8.0,
        restart_during_verify=True,
        seed=11,
    )
    chaos = Chaos(plan, tmp_path)
    async with chaos.running():
        tally = await chaos.drive()
        results = await verify(chaos)
    detail = results["detail"]
    print(json.dumps(results, indent=1, default=str))  # shown when an assertion below fails
    assert "crashed" not in results
    assert tally.worker_kills >= 2 and tally.page_kills >= 2, "the faults happened"
    assert results["server_restarts"] == 2, "during the lives and in the middle of the verification"
    assert detail["smtp_outage_s"] and detail["db_outage_s"]
    assert results["expected_state_ok"] == plan.relationships, detail["refused_updates"]
    assert (results["audit_mismatches"], results["records_mismatches"], results["failed_workflows"]) == (0, 0, 0)
    assert (results["missing_emails"], results["duplicate_emails"]) == (0, 0)
    # A worker killed between the SMTP server taking a message and the outbox noting it sends
    # that same message again (same Message-ID and link), which the mailbox folds; never a
    # different one (that would be a message with no outbox row, or a token mailed twice).
    assert detail["emails_without_outbox_row"] == 0 and detail["tokens_in_more_than_one_email"] == 0
    assert results["smtp_redeliveries"] <= tally.worker_kills
    assert detail["tokens_mailed"] == 2 * plan.relationships  # the invitation and the reinstatement's
    # Events out: every change's event reached the partner's receiver (down for a while), in
    # each relationship's order, signed; a repeat is only ever the same event id again.
    assert detail["receiver_outage_s"] and detail["events_logged"] == 6 * plan.relationships
    assert (results["events_lost"], results["events_out_of_order"], results["events_badly_signed"]) == (0, 0, 0)
