"""Events out, for backend services and ops: the event log (replay from a cursor) and webhooks
(subscribe, rotate a secret, unsubscribe, dead letters, redeliver, how they are doing).

Every change of every lifecycle is in the log, written with the change itself, so nothing is
ever only in flight: a consumer that missed deliveries reads `since(cursor)`. A webhook is a
partner's receiver: a delivery workflow per webhook (workflows/webhook.py) posts its events
in order, signed as Standard Webhooks ask, and retries each for days before a dead letter.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import secrets
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from partnerflow.activities.records import Records, utc_now
from partnerflow.states.events import cloud_event, wanted
from partnerflow.states.messages import EventRef, WebhookStart
from partnerflow.states.models import Cloud
from partnerflow.states.names import TASK_QUEUE, WEBHOOK_ID, WEBHOOK_TYPE

MAX_PATTERNS = 20


class EventsError(ValueError):
    """A request the events API refuses: the message names the field and the rule."""


@dataclass(frozen=True)
class Subscribed:
    webhook_id: str
    secret: str  # shown once: the receiver verifies with it
    after: int  # the webhook receives the events after this one


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_url(url: str) -> str:
    """https, or http to this machine only (a receiver in development)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 2000:
        raise EventsError("url: an http(s) URL of at most 2000 characters is required")
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise EventsError("url: must be https (http only to 127.0.0.1 or localhost, for development)")
    return url


def check_types(types: Sequence[str]) -> list[str]:
    if len(types) > MAX_PATTERNS or any(
        not t or len(t) > 100 or not t.replace("*", "x").replace("-", "").isalnum() for t in types
    ):
        raise EventsError(f"types: at most {MAX_PATTERNS} event types or patterns (letters, digits, '-', '*')")
    return list(types)


class Events:
    """The event log and the webhooks of one deployment's records (and its Temporal clients,
    for the delivery workflows)."""

    def __init__(self, records: Records, clients: Mapping[Cloud, Client] | None = None) -> None:
        self.records = records
        self.clients = dict(clients or {})

    # --- the log ------------------------------------------------------------------------
    def since(
        self, cloud: Cloud, partner_id: str, after: int = 0, limit: int = 100, types: Sequence[str] = ()
    ) -> tuple[list[dict[str, Any]], int]:
        """The partner's events after `after` (CloudEvents), and the cursor to ask with next."""
        if after < 0 or not 1 <= limit <= 1000:
            raise EventsError("since: a cursor of 0 or more, and a limit of 1 to 1000")
        rows = self.records.events_after(cloud.value, partner_id, after, limit)
        cursor = rows[-1]["seq"] if rows else after
        return [cloud_event(r) for r in rows if wanted(types, r["type"])], cursor

    # --- webhooks -----------------------------------------------------------------------
    async def subscribe(
        self,
        cloud: Cloud,
        partner_id: str,
        url: str,
        types: Sequence[str] = (),
        *,
        from_start: bool = False,
        retry_window: timedelta = timedelta(days=3),
        max_interval: timedelta = timedelta(hours=1),
        task_queue: str = TASK_QUEUE,
    ) -> Subscribed:
        """A webhook for the partner's events from now on (`from_start`: the whole log too)."""
        webhook_id = "wh-" + secrets.token_hex(8)
        secret = new_secret()
        after = 0 if from_start else await asyncio.to_thread(self.records.last_event_seq)
        values = dict(
            webhook_id=webhook_id,
            cloud=cloud.value,
            partner_id=partner_id,
            url=check_url(url),
            types=check_types(types),
            secret=secret,
            previous_secret=None,
            after_seq=after,
            status="subscribed",
            created_at=utc_now(),
        )
        await asyncio.to_thread(self.records.put_webhook, values)
        start = WebhookStart(
            webhook_id=webhook_id,
            cloud=cloud.value,
            partner_id=partner_id,
            after=after,
            retry_window=retry_window,
            max_interval=max_interval,
        )
        await self._client(cloud).start_workflow(
            WEBHOOK_TYPE,
            start,
            id=WEBHOOK_ID.format(webhook_id=webhook_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"webhook {webhook_id} of partner {partner_id}",
        )
        return Subscribed(webhook_id, secret, after)

    def rotate(self, webhook_id: str) -> str:
        """A new secret; deliveries are signed with both until `finish_rotation`."""
        hook = self._hook(webhook_id)
        secret = new_secret()
        self.records.update_webhook(webhook_id, secret=secret, previous_secret=hook["secret"])
        return secret

    def finish_rotation(self, webhook_id: str) -> None:
        self._hook(webhook_id)
        self.records.update_webhook(webhook_id, previous_secret=None)

    def unsubscribe(self, webhook_id: str) -> None:
        """Removed: its workflow ends at its next look at the log; the deliveries stay on record."""
        self._hook(webhook_id)
        self.records.update_webhook(webhook_id, status="removed")

    def webhooks(self, cloud: Cloud, partner_id: str | None = None) -> list[dict[str, Any]]:
        """The active webhooks, without their secrets."""
        hidden = {"secret", "previous_secret"}
        return [
            {**{k: v for k, v in h.items() if k not in hidden}, "rotating": bool(h["previous_secret"])}
            for h in self.records.webhooks_of(cloud.value, partner_id)
        ]

    def dead_letters(self, webhook_id: str) -> list[dict[str, Any]]:
        self._hook(webhook_id)
        return self.records.deliveries(webhook_id, "dead")

    async def redeliver(self, webhook_id: str, event_ids: Sequence[str] = ()) -> int:
        """Send these events again (default: every dead letter); how many are queued."""
        hook = self._hook(webhook_id)
        refs = []
        for event_id in event_ids or [d["event_id"] for d in self.records.deliveries(webhook_id, "dead")]:
            row = self.records.event(event_id)
            mine = row is not None and hook["partner_id"] in (row["partner_id"], row["provider_id"])
            if row is None or not mine:
                raise EventsError(f"event_ids: {event_id} is not an event of partner {hook['partner_id']}")
            refs.append(EventRef(seq=row["seq"], event_id=row["event_id"], type=row["type"]))
        if not refs:
            return 0
        handle = self._client(Cloud(hook["cloud"])).get_workflow_handle(WEBHOOK_ID.format(webhook_id=webhook_id))
        queued: int = await handle.execute_update("redeliver", refs, result_type=int)
        return queued

    def stats(self, webhook_id: str) -> dict[str, Any]:
        """Delivered, dead, and how late deliveries came (ms from the change)."""
        self._hook(webhook_id)
        rows = self.records.deliveries(webhook_id, limit=100_000)
        lags = sorted(r["lag_ms"] for r in rows if r["status"] == "delivered" and r["lag_ms"] is not None)
        return {
            "delivered": sum(r["status"] == "delivered" for r in rows),
            "dead": sum(r["status"] == "dead" for r in rows),
            "lag_ms_p50": statistics.median(lags) if lags else None,
            "lag_ms_max": lags[-1] if lags else None,
        }

    def _hook(self, webhook_id: str) -> dict[str, Any]:
        hook = self.records.webhook(webhook_id)
        if hook is None or hook["status"] != "subscribed":
            raise EventsError(f"webhook_id: no active webhook {webhook_id}")
        return hook

    def _client(self, cloud: Cloud) -> Client:
        if cloud not in self.clients:
            raise EventsError(f"cloud: not connected to cloud {cloud.value}")
        return self.clients[cloud]
