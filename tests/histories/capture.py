"""Capture workflow histories from real runs, for the replay tests (`tests/test_replay.py`).

    python -m tests.histories.capture v2     # writes tests/histories/v2-*.json

Run it once per released workflow version and commit the files: every later change
of workflow code must still replay them (or be guarded by `workflow.patched`).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink
from partnerflow.runtime import search_attributes
from partnerflow.runtime.converter import data_converter
from partnerflow.states.delegated_admin import DELEGATED_ADMIN
from partnerflow.states.models import Cloud
from partnerflow.states.names import NAMESPACES
from partnerflow.testing import BIN, START_OVERRIDES, Harness, actor, free_port, poll, running

HERE = Path(__file__).resolve().parent


async def whole_life(h: Harness) -> WorkflowHandle[Any, Any]:
    handle = await h.bring_to("active")
    await h.update(handle, "set_purchase_permission", {"actor": actor("admin_agent"), "allowed": True})
    await h.update(handle, "end_relationship", {"actor": actor(), "reason": "contract over"})
    await h.update(handle, "reinstate", {"actor": actor()})
    await h.update(handle, "accept_invitation", h.payload("accept_invitation", handle.id.split("/")[-1]))
    return handle


async def invitation_expires(h: Harness) -> WorkflowHandle[Any, Any]:
    handle = await h.start(timers={"invitation_ttl": "PT3S", "reminders_before": ["PT1S"]})
    await h.wait_for_state(handle, "invitation_expired")
    await h.update(handle, "resend_invitation", {"actor": actor()})
    await h.update(handle, "cancel_invitation", {"actor": actor(), "reason": "gave up"})
    await handle.result()
    return handle


async def referral_declined(h: Harness) -> WorkflowHandle[Any, Any]:
    handle = await h.bring_to("referral_declined")
    await handle.result()
    return handle


async def referral_accepted_then_removed(h: Harness) -> WorkflowHandle[Any, Any]:
    """v4 on: the referred partner names the admin; the customer's portal removes the partner."""
    handle = await h.bring_to("referred", **START_OVERRIDES["refer"])
    customer_id = handle.id.split("/")[-1]
    await h.update(handle, "accept_referral", h.payload("accept_referral", customer_id))
    await h.update(handle, "accept_invitation", h.payload("accept_invitation", customer_id))
    await h.update(handle, "remove_partner", h.payload("remove_partner", customer_id))
    return handle


GDAP_NOW = {"timers": {"step": "PT0S"}}  # on the dev server: its steps take no wall time


async def gdap_whole_life(h: Harness) -> WorkflowHandle[Any, Any]:
    """v5 on: a delegated admin relationship approved by link, its access assigned, changed and
    taken back, then terminated by the partner."""
    handle = await h.bring_to("active", lifecycle=DELEGATED_ADMIN, **GDAP_NOW)
    admin = actor("admin_agent")
    await h.update(handle, "assign", {"actor": admin, "group_id": "helpdesk", "roles": ["Helpdesk Administrator"]})
    await h.update(
        handle, "update_assignment", {"actor": admin, "group_id": "helpdesk", "roles": ["License Administrator"]}
    )
    await h.update(handle, "delete_assignment", {"actor": admin, "group_id": "helpdesk"})
    await h.update(handle, "terminate", {"actor": admin, "reason": "contract over"})
    await handle.result()
    return handle


async def gdap_request_expires(h: Harness) -> WorkflowHandle[Any, Any]:
    """v5 on: an approval request reminded, then expired unapproved."""
    timers = {"step": "PT0S", "approval_ttl": "PT3S", "approval_reminders_before": ["PT1S"]}
    handle = await h.bring_to("approvalPending", lifecycle=DELEGATED_ADMIN, timers=timers)
    await handle.result()
    return handle


SCENARIOS: dict[str, Callable[[Harness], Awaitable[WorkflowHandle[Any, Any]]]] = {
    "whole-life": whole_life,
    "invitation-expires": invitation_expires,
    "referral-declined": referral_declined,
    "referral-removed": referral_accepted_then_removed,
    "gdap-whole-life": gdap_whole_life,
    "gdap-request-expires": gdap_request_expires,
}


async def capture(version: str) -> list[Path]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        namespace=NAMESPACES[Cloud.PUBLIC],
        data_converter=data_converter,
        dev_server_extra_args=[f"--namespace={NAMESPACES[Cloud.USGOV]}", *search_attributes.cli_flags()],
    )
    written = []
    try:
        with tempfile.TemporaryDirectory() as tmp, MailSink(Path(tmp) / "mail", port=free_port()) as sink:
            records = Records(f"sqlite:///{tmp}/records.db")
            records.create_schema()
            async with running(env, sink, records) as harness:
                for name, scenario in SCENARIOS.items():
                    handle = await scenario(harness)

                    async def settled(handle: WorkflowHandle[Any, Any] = handle) -> bool:
                        return not (await handle.describe()).raw_description.pending_activities

                    await poll(settled)
                    history = await handle.fetch_history()
                    path = HERE / f"{version}-{name}.json"
                    path.write_text(history.to_json())
                    written.append(path)
            records.dispose()
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    version = sys.argv[1] if len(sys.argv) > 1 else datetime.now(UTC).strftime("v%Y%m%d")
    for path in asyncio.run(capture(version)):
        print(f"captured {path.relative_to(HERE.parent.parent)}")
