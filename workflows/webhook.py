"""A webhook's delivery: one workflow per subscription, carrying its partner's events to its
receiver in the log's order, each retried with growing waits for the retry window (three
days by default), then left in the dead letters and the next one sent. A receiver that is
slow or down holds up only its own webhook, never a lifecycle: those only write the log.

Ops find a webhook by its search attributes (`PartnerId`, `Cloud`, `DeliveryState`
`delivering` since `StateChangedAt`); the pending activity shows the attempt and the last
failure. `redeliver` (an update) sends dead letters again, after the batch in hand.

PYTEST_DONT_REWRITE: the sandbox imports this module for every workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from partnerflow.states.messages import (
        DEAD_LETTER,
        DELIVER_EVENT,
        NEXT_EVENTS,
        DeadLetter,
        Deliver,
        EventBatch,
        EventRef,
        NextEvents,
        WebhookStart,
    )
    from partnerflow.states.names import CLOUD, DELIVERY_STATE, PARTNER_ID, STATE_CHANGED_AT, WEBHOOK_TYPE

WAIT = timedelta(seconds=90)  # a `next_events` long poll, with room
HEARTBEAT = timedelta(seconds=5)  # a killed worker's activity is tried again this soon
QUICK = timedelta(seconds=30)
MAX_REDELIVERIES = 1000


@workflow.defn(name=WEBHOOK_TYPE)
class WebhookWorkflow:
    def __init__(self) -> None:
        self._redeliver: list[EventRef] = []
        self._cursor = 0

    @workflow.run
    async def run(self, start: WebhookStart) -> None:
        self._cursor = start.after
        self._mark("idle", start)
        while True:
            while self._redeliver:
                await self._send(start, self._redeliver.pop(0))
            batch = await self._next(start)
            if batch is None:
                continue  # a redelivery was asked for while waiting: it goes first
            if batch.removed:
                return
            if batch.events:
                self._mark("delivering", start)
                for event in batch.events:
                    await self._send(start, event)
                self._mark("idle", start)
            self._cursor = batch.last_seq
            if workflow.info().is_continue_as_new_suggested() and not self._redeliver:
                workflow.continue_as_new(start.model_copy(update={"after": self._cursor}))

    async def _next(self, start: WebhookStart) -> EventBatch | None:
        """The next events, or None as soon as a redelivery is queued (the long poll is cancelled)."""
        poll = workflow.start_activity(
            NEXT_EVENTS.name,
            NextEvents(webhook_id=start.webhook_id, after=self._cursor),
            result_type=NEXT_EVENTS.result,
            start_to_close_timeout=WAIT,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            cancellation_type=ActivityCancellationType.TRY_CANCEL,
            summary="next events",
        )
        asked = asyncio.ensure_future(workflow.wait_condition(lambda: bool(self._redeliver)))
        await workflow.wait([poll, asked], return_when=asyncio.FIRST_COMPLETED)
        if poll.done():
            asked.cancel()
            batch: EventBatch = poll.result()
            return batch
        poll.cancel()
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await poll
        return None

    async def _send(self, start: WebhookStart, event: EventRef) -> None:
        deliver = Deliver(webhook_id=start.webhook_id, seq=event.seq, event_id=event.event_id)
        try:
            await workflow.execute_activity(
                DELIVER_EVENT.name,
                deliver,
                result_type=DELIVER_EVENT.result,
                schedule_to_close_timeout=start.retry_window,
                start_to_close_timeout=QUICK,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=start.max_interval,
                    non_retryable_error_types=["WebhookGone"],
                ),
                summary=f"deliver {event.type} #{event.seq}",
            )
        except ActivityError as failed:
            cause = failed.cause
            details = cause.details if isinstance(cause, ApplicationError) else ()
            attempts = int(details[0]) if details and isinstance(details[0], int) else 0
            error = cause.message if isinstance(cause, ApplicationError) else type(cause).__name__
            dead = DeadLetter(
                webhook_id=start.webhook_id, seq=event.seq, event_id=event.event_id, attempts=attempts, error=error
            )
            await workflow.execute_local_activity(
                DEAD_LETTER.name, dead, result_type=DEAD_LETTER.result, start_to_close_timeout=QUICK
            )

    def _mark(self, state: str, start: WebhookStart) -> None:
        workflow.upsert_search_attributes(
            [
                SearchAttributeKey.for_keyword(DELIVERY_STATE).value_set(state),
                SearchAttributeKey.for_keyword(PARTNER_ID).value_set(start.partner_id),
                SearchAttributeKey.for_keyword(CLOUD).value_set(start.cloud),
                SearchAttributeKey.for_datetime(STATE_CHANGED_AT).value_set(workflow.now()),
            ]
        )

    @workflow.update
    async def redeliver(self, events: list[EventRef]) -> int:
        """Send these events again (dead letters, or any a receiver lost); how many are queued."""
        self._redeliver.extend(events)
        return len(self._redeliver)

    @redeliver.validator
    def _check_redeliver(self, events: list[EventRef]) -> None:
        if not events or len(self._redeliver) + len(events) > MAX_REDELIVERIES:
            raise ApplicationError(
                f"events: between 1 and {MAX_REDELIVERIES - len(self._redeliver)} at a time",
                type="InvalidInput",
                non_retryable=True,
            )

    @workflow.query
    def cursor(self) -> int:
        """The last event of the log this webhook is past (sent, dead-lettered or not wanted)."""
        return self._cursor
