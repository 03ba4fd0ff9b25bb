"""The activities a relationship's workflow runs: thin adapters over Records and Mailer.

Each is idempotent under Temporal's retries: records by `change_id`, email by
its outbox key. The invitation token is born here, goes into one email, and
leaves only as its SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.email import Letter, Mailer, message_id_for
from activities.letters import Invitation, Notice, invitation_letter, invitation_link, notice_letter
from activities.records import Change, OutboxEntry, Records, utc_now
from states.machine import token_hash

log = structlog.get_logger(__name__)


def _log() -> Any:
    """The module logger, bound to the running activity's workflow and run."""
    if not activity.in_activity():
        return log
    info = activity.info()
    return log.bind(
        workflow_id=info.workflow_id,
        run_id=info.workflow_run_id,
        activity_type=info.activity_type,
        attempt=info.attempt,
    )


#: 256 bits: the token key's size when the worker makes its own (the contract asks for at least 128).
TOKEN_BYTES = 32


def invitation_token(token_key: bytes, invitation_key: str) -> str:
    """An invitation's token: HMAC-SHA256 of the invitation's id (unique: it holds the run id
    and the invitation's number) under a 256-bit secret key.

    Why not a fresh random value per attempt: an attempt whose worker dies after the SMTP
    server took the message, before the outbox row says so, is retried; a fresh value would
    mail a second invitation with a second (dead) link. The same key makes the same token,
    so the retry sends the very same message (same link, same Message-ID), which receiving
    mail systems fold into one. Without the key, a token is as unguessable as a random one.
    """
    digest = hmac.new(token_key, invitation_key.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class IssuedToken(BaseModel):
    """What the workflow learns of an invitation: the hash, never the token."""

    model_config = ConfigDict(frozen=True)

    token_sha256: str
    message_id: str


class SubscriptionsKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    cloud: str
    partner_id: str
    customer_id: str


class RelationshipActivities:
    """One set per cloud: a worker of one cloud never writes or reads another cloud's rows."""

    def __init__(
        self,
        records: Records,
        mailer: Mailer,
        link_base_url: str,
        cloud: str | None = None,
        token_key: bytes | None = None,
    ) -> None:
        self.records = records
        self.mailer = mailer
        self.link_base_url = link_base_url
        self.cloud = cloud
        # Workers share the configured key; without one, this process makes its own (from
        # `secrets`), and only its own retries send the same token again.
        self._token_key = token_key or secrets.token_bytes(TOKEN_BYTES)

    def _same_cloud(self, cloud: str) -> None:
        if self.cloud is not None and cloud != self.cloud:
            raise ApplicationError(
                f"cloud {cloud} rows are not this {self.cloud} worker's to touch",
                type="CloudIsolation",
                non_retryable=True,
            )

    @activity.defn(name="send_invitation")
    async def send_invitation(self, invite: Invitation) -> IssuedToken:
        sent = await asyncio.to_thread(self.records.outbox_entry, invite.key)
        if sent and sent.status == "sent" and sent.token_sha256:
            _log().info("email.already_sent", kind="invitation", key=invite.key)
            return IssuedToken(token_sha256=sent.token_sha256, message_id=sent.message_id)
        # A pending row means an earlier attempt may or may not have delivered: the same
        # key makes the same token, so at worst the same message goes again.
        token = invitation_token(self._token_key, invite.key)
        letter = invitation_letter(invite, invitation_link(self.link_base_url, invite.workflow_id, token))
        digest = token_hash(token)
        # One Message-ID per token: a resent invitation (a new link) is a new message.
        message_id = message_id_for(f"{invite.key}/{digest}")
        sent = await self._deliver(invite.key, invite.workflow_id, "invitation", letter, message_id, digest)
        return IssuedToken(token_sha256=sent.token_sha256 or digest, message_id=sent.message_id)

    @activity.defn(name="send_notice")
    async def send_notice(self, notice: Notice) -> str:
        sent = await asyncio.to_thread(self.records.outbox_entry, notice.key)
        if sent and sent.status == "sent":
            _log().info("email.already_sent", kind=notice.kind.value, key=notice.key)
            return sent.message_id
        message_id = message_id_for(notice.key)
        letter = notice_letter(notice)
        delivered = await self._deliver(notice.key, notice.workflow_id, notice.kind.value, letter, message_id, None)
        return delivered.message_id

    async def _deliver(
        self,
        key: str,
        workflow_id: str,
        kind: str,
        letter: Letter,
        message_id: str,
        token_sha256: str | None,
    ) -> OutboxEntry:
        """Send once: the outbox row is claimed before and marked after; returns what was sent."""
        entry = OutboxEntry(
            key=key,
            message_id=message_id,
            kind=kind,
            recipient=letter.to,
            subject=letter.subject,
            workflow_id=workflow_id,
            token_sha256=token_sha256,
            status="pending",
            attempts=0,
        )
        claimed = await asyncio.to_thread(self.records.outbox_reserve, entry, now=utc_now())
        if claimed is None:  # a concurrent attempt got there first
            done = await asyncio.to_thread(self.records.outbox_entry, key)
            assert done is not None
            _log().info("email.already_sent", kind=kind, key=key)
            return done
        await self.mailer.send(
            self.mailer.build(letter, message_id),
            on_accepted=lambda: self.records.outbox_mark_sent(key, now=utc_now()),
        )
        _log().info("email.sent", kind=kind, key=key, message_id=message_id)
        if activity.in_activity():
            activity.metric_meter().create_counter(
                "partnerflow_emails_sent", "Emails delivered to the SMTP server, by kind"
            ).add(1, {"kind": kind})
        return entry

    @activity.defn(name="record_change")
    async def record_change(self, change: Change) -> bool:
        self._same_cloud(change.cloud)
        recorded = await asyncio.to_thread(self.records.apply_change, change)
        _log().info(
            "records.change" if recorded else "records.already_recorded",
            change_id=change.change_id,
            operation=change.operation,
            to_state=change.to_state,
        )
        return recorded

    @activity.defn(name="count_active_subscriptions")
    async def count_active_subscriptions(self, key: SubscriptionsKey) -> int:
        self._same_cloud(key.cloud)
        return await asyncio.to_thread(self.records.active_subscriptions, key.cloud, key.partner_id, key.customer_id)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.send_invitation,
            self.send_notice,
            self.record_change,
            self.count_active_subscriptions,
        ]
