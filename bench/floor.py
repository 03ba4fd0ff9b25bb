"""The floor: a bare workflow with the shape of one partnerflow lifecycle and nothing else.

The same commands as partnerflow's invite → accept → set_purchase_permission → end:
3 regular activities (partnerflow's emails), 5 local activities (its 4 `record_change`
and 1 `count_active_subscriptions`), 4 updates (`started`, the update-with-start, and
the three of the lifecycle) and 1 timer (the invitation's first reminder, cancelled by
the acceptance). The activities do nothing; nothing is validated, recorded or sent.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

#: The first reminder of a 30-day invitation: 23 days away, cancelled by the acceptance.
FIRST_REMINDER = timedelta(days=23)
TIMEOUT = timedelta(seconds=30)


@activity.defn(name="floor_regular")
async def floor_regular(step: str) -> str:
    return step


@activity.defn(name="floor_local")
async def floor_local(step: str) -> str:
    return step


ACTIVITIES = [floor_regular, floor_local]


@workflow.defn(name="Relationship")
class FloorWorkflow:
    def __init__(self) -> None:
        self.state = "new"

    @workflow.run
    async def run(self, start: dict[str, Any]) -> dict[str, str]:
        await self._regular("invitation")
        await self._local("record invited")
        self.state = "invited"
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self.state != "invited", timeout=FIRST_REMINDER)
        await workflow.wait_condition(lambda: False)  # open, like a relationship that may be reinstated
        return {"state": self.state}

    async def _regular(self, step: str) -> None:
        await workflow.execute_activity(floor_regular, step, start_to_close_timeout=TIMEOUT)

    async def _local(self, step: str) -> None:
        await workflow.execute_local_activity(floor_local, step, start_to_close_timeout=TIMEOUT)

    @workflow.update
    async def started(self) -> dict[str, str]:
        await workflow.wait_condition(lambda: self.state != "new")
        return {"state": self.state}

    @workflow.update
    async def accept_invitation(self, command: dict[str, Any]) -> dict[str, str]:
        await self._local("record active")
        self.state = "active"
        await self._regular("notice accepted")
        return {"state": self.state}

    @workflow.update
    async def set_purchase_permission(self, command: dict[str, Any]) -> dict[str, str]:
        await self._local("record permission")
        return {"state": self.state}

    @workflow.update
    async def end_relationship(self, command: dict[str, Any]) -> dict[str, str]:
        await self._local("count subscriptions")
        await self._local("record ended")
        self.state = "ended"
        await self._regular("notice ended")
        return {"state": self.state}
