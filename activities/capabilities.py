"""The capabilities every lifecycle's workflow uses: send a declared letter, record a change,
read a guard's fact. Thin adapters over `Records` and `Mailer`; no lifecycle is known by name.

Each is idempotent under Temporal's retries: records by `change_id`, email by its
outbox key. A link token is born here, goes into one email, and leaves only as its SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from partnerflow.activities.email import Letter, Mailer, message_id_for
from partnerflow.activities.letters import write
from partnerflow.activities.records import OutboxEntry, Records, utc_now
from partnerflow.activities.relay import LetterRelay
from partnerflow.activities.webhooks import Deliveries
from partnerflow.states import messages
from partnerflow.states.declaration import Lifecycle
from partnerflow.states.lifecycles import LIFECYCLES
from partnerflow.states.messages import (
    Admission,
    Admit,
    Change,
    Counted,
    Found,
    IssuedToken,
    ReadFact,
    Recorded,
    Related,
    SendLetter,
)
from partnerflow.states.models import Partner
from partnerflow.states.names import ErrorType
from partnerflow.states.proof import Expected, Proven, Verifier
from partnerflow.states.tokens import token_hash

log = structlog.get_logger(__name__)

#: 256 bits: the token key's size when the worker makes its own (the contract asks for at least 128).
TOKEN_BYTES = 32


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


def link_token(token_key: bytes, letter_key: str) -> str:
    """A link's token: HMAC-SHA256 of the letter's id (unique: it holds the run id and the
    change's number) under a 256-bit secret key.

    Why not a fresh random value per attempt: an attempt whose worker dies after the SMTP
    server took the message, before the outbox row says so, is retried; a fresh value would
    mail a second letter with a second (dead) link. The same key makes the same token, so
    the retry sends the very same message (same link, same Message-ID), which receiving
    mail systems fold into one. Without the key, a token is as unguessable as a random one.
    """
    digest = hmac.new(token_key, letter_key.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def link(base_url: str, lifecycle: Lifecycle, workflow_id: str, token: str) -> str:
    """The page a link letter opens: the lifecycle's token query names its path."""
    query = urlencode({"relationship": workflow_id, "token": token})
    return f"{base_url.rstrip('/')}/{lifecycle.token_query}?{query}"


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=ErrorType.INVALID_INPUT.value, non_retryable=True)


class Capabilities:
    """One set per cloud: a worker of one cloud never writes or reads another cloud's rows."""

    def __init__(
        self,
        records: Records,
        mailer: Mailer,
        link_base_url: str,
        cloud: str | None = None,
        token_key: bytes | None = None,
        lifecycles: Mapping[str, Lifecycle] = LIFECYCLES,
        verifier: Verifier | None = None,
    ) -> None:
        self.records = records
        self.verifier = verifier or Verifier()  # proven mode, no issuer: nothing is proven, all refused
        self.lifecycles = lifecycles  # whose letters this worker can write
        self.mailer = mailer
        self.link_base_url = link_base_url
        self.cloud = cloud
        # Workers share the configured key; without one, this process makes its own (from
        # `secrets`), and only its own retries send the same token again.
        self._token_key = token_key or secrets.token_bytes(TOKEN_BYTES)
        # Only a shared key lets another worker's relay send the link this one promised.
        self._key_shared = token_key is not None
        self.deliveries = Deliveries(records, cloud)  # the webhooks' activities, over the same records
        self.relay = LetterRelay(records, functools.partial(self.send_letter, queued=True), cloud)

    def _same_cloud(self, cloud: str) -> None:
        if self.cloud is not None and cloud != self.cloud:
            raise ApplicationError(
                f"cloud {cloud} rows are not this {self.cloud} worker's to touch",
                type=ErrorType.CLOUD_ISOLATION.value,
                non_retryable=True,
            )

    def _link(self, letter_key: str) -> tuple[str, str, str]:
        """A link letter's token, its hash and its Message-ID (one per token: a resent link is a
        new message): the one home of what a promise and its sending must agree on."""
        token = link_token(self._token_key, letter_key)
        digest = token_hash(token)
        return token, digest, message_id_for(f"{letter_key}/{digest}")

    @activity.defn(name=messages.SEND_NOTICE.name)
    async def send_notice(self, send: SendLetter) -> str:
        """A letter without a link: its Message-ID."""
        return (await self.send_letter(send.model_copy(update={"token": False}))).message_id

    async def send_letter(self, send: SendLetter, *, queued: bool = False) -> IssuedToken:
        """Any declared letter, once; with `token`, a new link whose hash it answers. Registered
        as `send_<page>` per lifecycle with a page (see `all`). `queued`: the relay's, whose claim
        on the queued row stands for the outbox's pending row (activities/relay.py)."""
        lifecycle = self.lifecycles.get(send.lifecycle)
        text = lifecycle.letters.get(send.letter) if lifecycle else None
        if lifecycle is None or text is None:
            raise _invalid(f"letter: no letter {send.letter} in lifecycle {send.lifecycle}")
        # A notice sent already is found by the outbox's claim below (`_deliver`); a link's is
        # answered from its row here, with the token's hash.
        sent = await asyncio.to_thread(self.records.outbox_entry, send.key) if send.token else None
        if sent and sent.status == "sent" and sent.token_sha256:
            _log().info("email.already_sent", kind=send.letter, key=send.key)
            if queued:  # a keyless attempt sent it; its queued copy goes unsent
                await asyncio.to_thread(self.records.letter_sent, send.key)
            return IssuedToken(message_id=sent.message_id, token_sha256=sent.token_sha256)
        if queued and send.token and send.expires_at and utc_now() >= send.expires_at:
            _log().info("email.link_expired_unsent", kind=send.letter, key=send.key)
            return IssuedToken(message_id="")  # a dead link: the relay drops the letter
        digest: str | None = None
        message_id = message_id_for(send.key)
        url = ""
        if send.token:
            # A pending row means an earlier attempt may or may not have delivered: the same
            # key makes the same token, so at worst the same message goes again.
            token, digest, message_id = self._link(send.key)
            if sent and sent.token_sha256 and sent.token_sha256 != digest:
                # Promised with another worker's key: this one cannot make that link. It waits
                # for a relay that can (and says so: the workers' keys must be one).
                _log().error("email.link_key_differs", kind=send.letter, key=send.key)
                raise RuntimeError("invitation.token_key: not the key this link was promised with")
            url = link(self.link_base_url, lifecycle, send.workflow_id, token)
        to, locale = send.to, send.locale
        if send.to_partner:
            self._same_cloud(send.cloud or "")
            partner = await asyncio.to_thread(self.records.partner, send.cloud or "", send.to_partner)
            if partner is None or not partner.contact_email:
                _log().warning("email.no_contact", kind=send.letter, key=send.key, partner_id=send.to_partner)
                return IssuedToken(message_id="")  # nobody to tell: `partnerflow partner add --contact-email`
            to, locale = partner.contact_email, partner.locale
        written = write(
            text,
            partner_name=send.partner_name,
            company=send.company,
            expires_at=send.expires_at,
            reason=send.reason,
            link=url,
            locale=locale,
            country=send.country,
        )
        letter = Letter(to, written.subject, written.text, written.html, written.language)
        entry = await self._deliver(send, letter, message_id, digest, queued=queued)
        return IssuedToken(message_id=entry.message_id, token_sha256=entry.token_sha256 or digest)

    async def _deliver(
        self, send: SendLetter, letter: Letter, message_id: str, digest: str | None, *, queued: bool = False
    ) -> OutboxEntry:
        """Send once: the outbox row is claimed before and marked after; returns what was sent.
        A queued letter is claimed in the queue instead, and marked sent as its queued row goes,
        in one transaction (one write where an activity's letter takes two)."""
        entry = OutboxEntry(
            key=send.key,
            message_id=message_id,
            kind=send.letter,
            recipient=letter.to,
            subject=letter.subject,
            workflow_id=send.workflow_id,
            token_sha256=digest,
            status="pending",
            attempts=0,
        )
        if not queued and await asyncio.to_thread(self.records.outbox_reserve, entry, now=utc_now()) is None:
            done = await asyncio.to_thread(self.records.outbox_entry, send.key)  # a concurrent attempt sent it
            assert done is not None
            _log().info("email.already_sent", kind=send.letter, key=send.key)
            return done

        def sent() -> None:
            if queued:
                self.records.outbox_sent_from_queue(entry, now=utc_now())
            else:
                self.records.outbox_mark_sent(send.key, now=utc_now())

        await self.mailer.send(self.mailer.build(letter, message_id), on_accepted=sent)
        _log().info("email.sent", kind=send.letter, key=send.key, message_id=message_id)
        if activity.in_activity():
            activity.metric_meter().create_counter(
                "partnerflow_emails_sent", "Emails delivered to the SMTP server, by kind"
            ).add(1, {"kind": send.letter})
        return entry

    @activity.defn(name=messages.RECORD_CHANGE.name)
    async def record_change(self, change: Change) -> bool:
        return await self._record(change)

    async def _record(self, change: Change, promised: Sequence[OutboxEntry] = ()) -> bool:
        self._same_cloud(change.cloud)
        try:
            recorded = await asyncio.to_thread(self.records.apply_change, change, promised)
        except ValueError as error:  # a table or field the records do not have: no retry mends it
            raise _invalid(str(error)) from None
        if change.letters:
            self.relay.wake([letter.key for letter in change.letters])
        # A recorded change is the workflow's `<lifecycle>.transition` line already; a retry that
        # finds it recorded is news.
        (_log().debug if recorded else _log().info)(
            "records.change" if recorded else "records.already_recorded",
            change_id=change.change_id,
            operation=change.operation,
            to_state=change.to_state,
        )
        return recorded

    @activity.defn(name=messages.RECORD_WITH_LINK.name)
    async def record_change_with_link(self, change: Change) -> IssuedToken:
        """A change whose row sends a new link (an invitation, a resent one): the link letter is
        queued with the change like its notices, and the answer is the token's hash, made from
        the workers' shared key, so any worker's relay sends that very link. A worker whose key
        is its own (none configured) sends the letter itself, before the change, as
        `send_<page>` does."""
        links = [letter for letter in change.letters if letter.token]
        if len(links) != 1:
            raise _invalid(f"letters: a change recorded with a link carries one link letter, not {len(links)}")
        [letter] = links
        without_link = change.model_copy(update={"letters": [x for x in change.letters if not x.token]})
        promised = await asyncio.to_thread(self.records.outbox_entry, letter.key)
        if promised is not None and promised.token_sha256:
            # An earlier attempt promised this link (or sent it): its hash stands, whatever key
            # this worker has, and the letter is not queued or sent again.
            await self._record(without_link)
            return IssuedToken(message_id=promised.message_id, token_sha256=promised.token_sha256)
        if not self._key_shared:
            issued = await self.send_letter(letter)
            await self._record(without_link)
            return issued
        _, digest, message_id = self._link(letter.key)
        entry = OutboxEntry(
            key=letter.key,
            message_id=message_id,
            kind=letter.letter,
            recipient=letter.to,
            subject="",  # written when it is sent
            workflow_id=letter.workflow_id,
            token_sha256=digest,
            status="pending",
            attempts=0,
        )
        await self._record(change, promised=[entry])
        return IssuedToken(message_id=entry.message_id, token_sha256=digest)

    @activity.defn(name=messages.RECORD_AND_FIND.name)
    async def record_change_and_find(self, change: Change) -> Recorded:
        """A change whose row cascades, and the customer's open lifecycles it reaches (read after
        the change is recorded, as `related_workflows` read them after `record_change`). A
        lifecycle this worker does not declare is refused before anything is recorded."""
        for name in change.find:
            if name not in self.lifecycles:
                raise _invalid(f"find: {name} is not a declared lifecycle")
        recorded = await self._record(change)
        related = {}
        for name in dict.fromkeys(change.find):
            lookup = Related(
                lifecycle=name, cloud=change.cloud, partner_id=change.partner_id, customer_id=change.customer_id
            )
            related[name] = (await self.related_workflows(lookup)).workflow_ids
        return Recorded(recorded=recorded, related=related)

    @activity.defn(name=messages.RELATED.name)
    async def related_workflows(self, related: Related) -> Found:
        """The open lifecycles a cascade reaches (the declaration names which lifecycle)."""
        self._same_cloud(related.cloud)
        lifecycle = self.lifecycles.get(related.lifecycle)
        if lifecycle is None:
            raise _invalid(f"lifecycle: {related.lifecycle} is not declared")
        prefix = lifecycle.workflow_id.split("{")[0]
        found = await asyncio.to_thread(
            self.records.open_lifecycles,
            related.cloud,
            related.partner_id,
            related.customer_id,
            prefix,
            {str(s) for s in lifecycle.final},
        )
        return Found(workflow_ids=found)

    @activity.defn(name=messages.ADMIT.name)
    async def admit_start(self, admit: Admit) -> Admission:
        """A start's partner facts from the registry (the referrer too must be in it), and its
        actor proven; the assertion is spent, so it starts no other run. A local activity: its
        answer is recorded in the history, which never asks again."""
        self._same_cloud(admit.cloud)
        expected = Expected(
            "partner_staff",
            admit.action,
            admit.workflow_id,
            admit.actor_user,
            admit.actor_partner_id,
            admit.actor_role,
        )
        # Fresh when the start was made: an outage or a reset that admits it later changes nothing.
        # The earlier of the server's start time and this clock: a test server that skips time
        # runs ahead of every real clock, so its start time is no moment a proof was made for.
        outcome = self.verifier.check(admit.proof, expected, now=min(admit.requested_at, utc_now()))
        if outcome is not None and not isinstance(outcome, Proven):
            return Admission(rule=outcome.rule, message=outcome.message)
        # The registry's reads and the proof's spending in one hop to the records' thread.
        return await asyncio.to_thread(self._admission, admit, outcome)

    def _admission(self, admit: Admit, outcome: Proven | None) -> Admission:
        registered: dict[str, Partner] = {}
        for partner_id in dict.fromkeys(p for p in (admit.partner_id, admit.referred_by) if p):
            found = self.records.partner(admit.cloud, partner_id)
            if found is None:
                return Admission(
                    rule="partner",
                    message=f"partner {partner_id} is not in the {admit.cloud} partner registry"
                    " (partnerflow partner add)",
                )
            registered[partner_id] = found
        partner = registered.get(admit.partner_id)
        if outcome is None:
            return Admission(partner=partner)
        fresh = self.records.use_proof(outcome.jti, outcome.issuer, admit.workflow_id, admit.run_id, outcome.expires_at)
        if not fresh:
            return Admission(rule="proof", message="proof: already used (jti): mint a new one for each request")
        return Admission(partner=partner, jti=outcome.jti, expires_at=outcome.expires_at)

    async def read_fact(self, read: ReadFact) -> Counted:
        """A named count from the records. Registered as `count_<fact>` per fact (see `all`)."""
        self._same_cloud(read.cloud)
        try:
            return await asyncio.to_thread(self.records.fact, read.fact, read.cloud, read.partner_id, read.customer_id)
        except ValueError as error:
            raise _invalid(str(error)) from None

    def all(self) -> list[Callable[..., Any]]:
        """Every activity this worker offers: the fixed ones, a link letter for each lifecycle
        with a page, and a count for each fact the records know."""
        found: dict[str, Callable[..., Any]] = {
            messages.SEND_NOTICE.name: self.send_notice,
            messages.RECORD_CHANGE.name: self.record_change,
            messages.RECORD_WITH_LINK.name: self.record_change_with_link,
            messages.ADMIT.name: self.admit_start,
            messages.RELATED.name: self.related_workflows,
            messages.RECORD_AND_FIND.name: self.record_change_and_find,
        }
        for lifecycle in self.lifecycles.values():
            if lifecycle.token_query:
                name = messages.send_link(lifecycle.token_query).name
                found[name] = _named(name, self.send_letter, SendLetter, IssuedToken)
        for fact in self.records.facts():
            name = messages.read_fact(fact).name

            async def count(read: ReadFact, fact: str = fact) -> Counted:
                return await self.read_fact(read.model_copy(update={"fact": read.fact or fact}))

            found[name] = _named(name, count, ReadFact, Counted)
        return [*found.values(), *self.deliveries.all()]


def _named(name: str, fn: Callable[..., Any], arg: type, result: type) -> Callable[..., Any]:
    """`fn` as the activity `name`, typed for the SDK's converter."""

    async def named(value: Any) -> Any:
        return await fn(value)

    named.__annotations__ = {"value": arg, "return": result}
    named.__name__ = named.__qualname__ = name
    return activity.defn(name=name)(named)
