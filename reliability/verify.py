"""After a chaos run: did every relationship end where it should, with every email and
record exactly once? The expectations come from the lifecycle table, not from this file."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

from partnerflow.activities.records import Records
from partnerflow.states import policy
from partnerflow.states.declaration import Row
from partnerflow.states.models import RelationshipView, StartRelationship
from partnerflow.states.relationship import GRANTS, RELATIONSHIP
from reliability.chaos import PARTNER, STEPS, Chaos, NoAnswer


def expected_life(life: StartRelationship) -> tuple[list[str], int, str]:
    """One chaos life, read off the declaration: its audit operations, its emails (those with
    someone to go to, as the workflow decides), its last state."""

    def letters(row: Row) -> int:
        return sum(policy.reaches(send, life) for send in row.sends())

    (start,) = RELATIONSHIP.rows_for("invite")
    state, operations, emails = start.dest, [start.operation], letters(start)
    for trigger in STEPS:
        rows = [r for r in RELATIONSHIP.rows_for(trigger) if state in r.sources]
        if len(rows) > 1:  # the permission's two rows: the life grants it
            rows = [r for r in rows if GRANTS in r.guards]
        (row,) = rows
        operations.append(row.operation)
        emails += letters(row)
        state = row.dest
    return operations, emails, state


async def settled(chaos: Chaos, records: Records, handle: WorkflowHandle[Any, Any], within_s: float = 180.0) -> None:
    """Every email a life's changes send is out: a life answered on the page may end (the
    relationship active) while its notice to the partner is still on its way, in an activity
    or in the records' letter queue. A relay killed mid-send holds its letter for its claim
    (`relay.CLAIM`, 30 s) before another relay sends it."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        described = await chaos.patiently(handle.describe)
        queued = await asyncio.to_thread(records.letters_queued, handle.id)
        if not described.raw_description.pending_activities and not queued:
            return
        await asyncio.sleep(0.5)


async def all_delivered(chaos: Chaos, logged: set[str]) -> set[str]:
    """The events the receiver has, once it has every logged one, or patience runs out."""
    deadline = time.monotonic() + chaos.plan.patience_s
    while True:
        have = set(chaos.receiver.unique())
        if logged <= have or time.monotonic() > deadline:
            return have
        await asyncio.sleep(1.0)


def event_figures(chaos: Chaos, logged: list[dict[str, Any]], delivered: set[str]) -> dict[str, int]:
    """Lost: logged, never received. Out of order: a relationship's events first received in
    another order than the log's. Redelivered: the same event id received again. Badly signed:
    a delivery the `standardwebhooks` package refused with the webhook's secret when it came."""
    assert chaos.webhook is not None
    seq = {e["event_id"]: e["seq"] for e in logged}
    order: dict[str, list[int]] = {}
    for event in chaos.receiver.unique().values():
        order.setdefault(event["subject"], []).append(seq.get(event["id"], -1))
    return {
        "events_lost": len(set(seq) - delivered),
        "events_out_of_order": sum(1 for seqs in order.values() for a, b in itertools.pairwise(seqs) if b < a),
        "events_redelivered": len(chaos.receiver.got) - len(chaos.receiver.unique()),
        "events_badly_signed": chaos.receiver.badly_signed,  # checked on arrival, as a receiver would
    }


async def verify(chaos: Chaos) -> dict[str, Any]:
    assert chaos.client is not None
    client = chaos.client
    records = Records(chaos.postgres.url)
    operations, emails_per_life, final = expected_life(chaos.starts[0])
    sent_per_life: list[list[str]] = []  # the Message-IDs each life's outbox says it sent
    known: set[str] = set()
    state_ok = audit_bad = records_bad = task_failures = 0
    halfway = len(chaos.starts) // 2 if chaos.plan.restart_during_verify else -1
    restart: asyncio.Task[None] | None = None
    try:
        for n, start in enumerate(chaos.starts):
            if n == halfway:  # the awkward moment: the server goes away while the checks are running
                restart = asyncio.create_task(chaos.restart_server())
            wid = start.workflow_id
            handle = client.get_workflow_handle(wid)
            try:
                await settled(chaos, records, handle)
                view = await chaos.patiently(handle.query, "state", result_type=RelationshipView)
                history = await chaos.patiently(handle.fetch_history)
            except NoAnswer as error:  # a finding: the life is counted as not where it should be
                chaos.tally.errors.append(f"{wid}: {error}")
                continue
            state_ok += view.state == final and view.reinstated_count == 1 and not view.purchase_permission

            trail = records.audit_trail(wid)
            same_ops = [r["operation"] for r in trail] == operations
            unique = len({r["change_id"] for r in trail}) == len(trail)
            tail_agrees = [a.operation for a in view.audit] == operations[-len(view.audit) :]
            audit_bad += not (same_ops and unique and tail_agrees)

            row = records.customer("public", PARTNER, start.customer.id)
            records_bad += not (
                row
                and row["state"] == view.state
                and row["version"] == len(trail)
                and row["purchase_permission"] == view.purchase_permission
                and row["reinstated_count"] == view.reinstated_count
            )

            outbox = records.outbox_for(wid)
            known.update(e.message_id for e in outbox)
            sent_per_life.append([e.message_id for e in outbox if e.status == "sent"])

            task_failures += any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events)
        failed = await chaos.patiently(client.count_workflows, "ExecutionStatus = 'Failed'")
        if restart is not None:
            await restart
        logged = records.events_after("public", PARTNER, 0, limit=10**6)
        delivered = await all_delivered(chaos, {e["event_id"] for e in logged})
    finally:
        records.dispose()
    events = event_figures(chaos, logged, delivered)

    # The mailbox as it is once every life has settled: an email a retry delivered while the
    # verification ran counts (a run once called two such emails missing).
    chaos.inbox.scan()
    counts = chaos.inbox.message_ids()
    missing = sum(max(0, emails_per_life - sum(1 for m in sent if counts[m] >= 1)) for sent in sent_per_life)
    redelivered = sum(c - 1 for c in counts.values() if c > 1)  # the same message (Message-ID) again
    orphans = sum(c for mid, c in counts.items() if mid not in known)  # a message no outbox row stands for
    tokens = Counter(d.token for d in chaos.inbox.delivered if d.token)
    t = chaos.tally
    return {
        "relationships": len(chaos.starts),
        "expected_state_ok": state_ok,
        "worker_kills": t.worker_kills,
        "page_kills": t.page_kills,
        "server_restarts": t.server_restarts,
        "duplicate_emails": redelivered + orphans,
        "missing_emails": missing,
        "audit_mismatches": audit_bad,
        "records_mismatches": records_bad,
        "failed_workflows": failed.count + task_failures,
        # The same message (Message-ID) handed to the SMTP server again: a worker killed between
        # the server's "250 OK" and the outbox noting it. This test mailbox folds them; a real
        # mailbox that does not dedupe by Message-ID shows the customer two copies.
        "smtp_redeliveries": chaos.sink.redeliveries(),
        **events,
        "detail": {
            "expected_state": final,
            "expected_audit": operations,
            "emails_per_relationship": emails_per_life,
            "emails_delivered": sum(counts.values()),
            "same_message_redelivered": redelivered,
            "emails_without_outbox_row": orphans,
            "tokens_in_more_than_one_email": sum(1 for c in tokens.values() if c > 1),
            "tokens_mailed": len(tokens),
            "workflows_failed": failed.count,
            "workflows_with_a_failed_task": task_failures,
            "refused_updates": t.refused[:20],
            "errors": t.errors[:20],
            "worker_starts": t.worker_starts,
            "page_starts": t.page_starts,
            "page_retries": t.page_retries,
            "smtp_outage_s": [round(s, 1) for s in t.smtp_outages],
            "receiver_outage_s": [round(s, 1) for s in t.receiver_outages],
            "events_logged": len(logged),
            "events_delivered": len(chaos.receiver.got),
            "db_outage_s": [round(s, 1) for s in t.db_outages],
            "transient_retries": t.transient_retries,
            "seconds": round(t.seconds, 1),
        },
    }
