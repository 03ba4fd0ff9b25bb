"""Webhook delivery: a partner's events, read from the event log, posted to its receiver,
signed as Standard Webhooks ask (`webhook-id`, `webhook-timestamp`, `webhook-signature`:
HMAC-SHA256 over id, timestamp and body, with the `standardwebhooks` package).

The workflow (workflows/webhook.py) keeps the order and the patience; these activities do
the I/O. The event's data and the secrets stay in the records: the history holds ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from standardwebhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from partnerflow.activities.records import Records, utc_now
from partnerflow.states import messages
from partnerflow.states.events import cloud_event, wanted
from partnerflow.states.messages import DeadLetter, Deliver, EventBatch, EventRef, NextEvents

BATCH = 100
POLL_S = 0.25  # how often a waiting `next_events` looks at the log
TIMEOUT_S = 10.0  # one POST: a receiver slower than this is retried later
USER_AGENT = "partnerflow-webhooks/1"


def _log() -> Any:
    return structlog.get_logger("partnerflow.webhooks").bind(**(_info() if activity.in_activity() else {}))


def _info() -> dict[str, Any]:
    info = activity.info()
    return {"workflow_id": info.workflow_id, "attempt": info.attempt}


def _shutting_down() -> bool:
    return activity.in_activity() and activity.is_worker_shutdown()


async def _pause() -> None:
    """POLL_S, or less if the worker is shutting down (a deploy never waits out a long poll)."""
    if not activity.in_activity():
        await asyncio.sleep(POLL_S)
        return
    activity.heartbeat()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(activity.wait_for_worker_shutdown(), POLL_S)


@contextlib.asynccontextmanager
async def _heartbeating(every_s: float = 1.0) -> AsyncIterator[None]:
    """Heartbeats while a POST is under way: a killed worker's delivery is retried within
    seconds (the heartbeat timeout), a slow receiver's is not mistaken for one."""
    if not activity.in_activity():
        yield
        return

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every_s)

    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()


def _attempt() -> int:
    """Carried by a failure, so the dead letter can say how many tries it took."""
    return activity.info().attempt if activity.in_activity() else 1


def signatures(secrets: list[str], event_id: str, at: datetime, body: str) -> str:
    """`v1,<sig>` for each secret in use, space-separated (two during a rotation)."""
    return " ".join(Webhook(s).sign(event_id, at, body) for s in secrets)


class Deliveries:
    """The webhook activities of one worker, over the records it shares with the lifecycles."""

    def __init__(self, records: Records, cloud: str | None = None, client: httpx.AsyncClient | None = None) -> None:
        self.records = records
        self.cloud = cloud  # a worker's activities touch only its own cloud's webhooks
        self._client = client

    def _hook(self, webhook_id: str) -> dict[str, Any] | None:
        hook = self.records.webhook(webhook_id)
        if hook is not None and self.cloud is not None and hook["cloud"] != self.cloud:
            raise ApplicationError(
                f"cloud {hook['cloud']} webhooks are not this {self.cloud} worker's",
                type="CloudIsolation",
                non_retryable=True,
            )
        return hook

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # made in the worker's event loop, on first use
            self._client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
        return self._client

    @activity.defn(name=messages.NEXT_EVENTS.name)
    async def next_events(self, ask: NextEvents) -> EventBatch:
        """The webhook's next events after the cursor; waits up to `wait_s` for one (heartbeating)."""
        deadline = time.monotonic() + ask.wait_s
        hook = await asyncio.to_thread(self._hook, ask.webhook_id)  # once a call: a removal is seen by the next
        if hook is None or hook["status"] != "subscribed":
            return EventBatch(last_seq=ask.after, removed=True)
        while True:
            rows = await asyncio.to_thread(
                self.records.events_after, hook["cloud"], hook["partner_id"], ask.after, BATCH
            )
            if rows:
                events = [EventRef(seq=r["seq"], event_id=r["event_id"], type=r["type"]) for r in rows]
                return EventBatch(events=[e for e in events if wanted(hook["types"], e.type)], last_seq=rows[-1]["seq"])
            if time.monotonic() >= deadline or _shutting_down():
                return EventBatch(last_seq=ask.after)  # a worker going away answers now: another asks
            await _pause()

    @activity.defn(name=messages.DELIVER_EVENT.name)
    async def deliver_event(self, deliver: Deliver) -> int:
        """POST one event; its HTTP status when the receiver took it (2xx). Anything else raises,
        naming only a status or an error's class, and the workflow's retry policy tries again."""
        hook = await asyncio.to_thread(self._hook, deliver.webhook_id)
        row = await asyncio.to_thread(self.records.event, deliver.event_id)
        if hook is None or row is None:
            raise ApplicationError("webhook or event gone", type="WebhookGone", non_retryable=True)
        body = json.dumps(cloud_event(row), separators=(",", ":"), sort_keys=True)
        now = datetime.now(UTC)
        secrets = [hook["secret"], *([hook["previous_secret"]] if hook["previous_secret"] else [])]
        headers = {
            "content-type": "application/cloudevents+json",
            "user-agent": USER_AGENT,
            "webhook-id": row["event_id"],
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures(secrets, row["event_id"], now, body),
        }
        try:
            async with _heartbeating():
                answer = await self.client.post(hook["url"], content=body.encode(), headers=headers)
        except httpx.HTTPError as error:
            self._count("partnerflow_webhook_failures", "Webhook attempts that failed", kind=type(error).__name__)
            raise ApplicationError(
                f"receiver unreachable ({type(error).__name__})", _attempt(), type="ReceiverUnreachable"
            ) from None
        if not 200 <= answer.status_code < 300:
            self._count("partnerflow_webhook_failures", "Webhook attempts that failed", kind=str(answer.status_code))
            raise ApplicationError(f"receiver answered {answer.status_code}", _attempt(), type="ReceiverRefused")
        at = utc_now()
        lag_ms = int((at - row["time"].replace(tzinfo=row["time"].tzinfo or UTC)).total_seconds() * 1000)
        await self._record(deliver, "delivered", _attempt(), at, lag_ms=lag_ms)
        self._count("partnerflow_webhook_deliveries", "Events delivered to webhooks", kind=row["type"])
        if activity.in_activity():
            activity.metric_meter().create_histogram(
                "partnerflow_webhook_lag", "From a change to its webhook's delivery", unit="ms"
            ).record(max(lag_ms, 0))
        _log().info("webhook.delivered", webhook_id=deliver.webhook_id, seq=deliver.seq, status=answer.status_code)
        return answer.status_code

    @activity.defn(name=messages.DEAD_LETTER.name)
    async def dead_letter(self, dead: DeadLetter) -> bool:
        """The retry window is over: the event waits in the dead letters for ops to redeliver."""
        await self._record(dead, "dead", dead.attempts, utc_now(), error=dead.error[:200])
        self._count("partnerflow_webhook_dead_letters", "Events given up on after the retry window")
        _log().warning("webhook.dead_letter", webhook_id=dead.webhook_id, seq=dead.seq, error=dead.error[:200])
        return True

    async def _record(
        self,
        of: Deliver | DeadLetter,
        status: str,
        attempts: int,
        at: datetime,
        *,
        error: str | None = None,
        lag_ms: int | None = None,
    ) -> None:
        """An event's outcome for its webhook, once (a retried activity writes the same row)."""
        row = dict(webhook_id=of.webhook_id, seq=of.seq, event_id=of.event_id, status=status, attempts=attempts)
        row |= dict(last_error=error, at=at, lag_ms=lag_ms)
        await asyncio.to_thread(self.records.record_delivery, row)

    def _count(self, name: str, about: str, **labels: str) -> None:
        if activity.in_activity():
            activity.metric_meter().create_counter(name, about).add(1, labels)

    def all(self) -> list[Callable[..., Any]]:
        return [self.next_events, self.deliver_event, self.dead_letter]
