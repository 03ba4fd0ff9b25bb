"""The letter relay: sends the letters a change queued in its own transaction.

A row's letters (its notices, and its link letter when the workers share a token key: the
token is made from that key, so no token is ever stored) go into the records with the change
(`Change.letters`, `letter_queue`), so the change and its letters are durable together and
the answer to the change waits for no mail server. The relay runs beside the worker
(`worker.new_worker`): woken the moment its own worker queues letters, and every `poll_s`
for what another worker queued or left claimed when it died.

Each letter goes through the same path as the `send_notice` activity (its outbox key: sent
once, a retry inside the SMTP conversation aside, RELIABILITY.md); a claim (one UPDATE ...
RETURNING) keeps two relays off the same letter; a failure waits and tries again, without
end, and the lifecycle's later letters in the same batch wait behind it (one a later change
queues meanwhile does not): an outage delays a letter, it never loses one. The workflow's
history holds the letters (in the change), not their sending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from partnerflow.activities.records import QueuedLetter, Records, utc_now
from partnerflow.states.messages import SendLetter
from partnerflow.states.names import TRACER

log = structlog.get_logger(__name__)

#: Traces remembered for letters not yet sent (beyond it, a letter begins a trace of its own).
TRACES_KEPT = 10_000


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


#: How long a relay's claim on a letter lasts: past it, another relay sends it (the first died).
#: Longer than a whole SMTP conversation may take (`SmtpSettings.deadline_s`, 20 s).
CLAIM = timedelta(seconds=30)
#: Waits after a failed attempt: doubling from the first to the last, then the last again.
FIRST_WAIT, LAST_WAIT = timedelta(seconds=1), timedelta(minutes=5)


def wait_after(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt."""
    return min(FIRST_WAIT * (1 << min(max(0, attempts - 1), 16)), LAST_WAIT)


class LetterRelay:
    """One per cloud worker; `send` is its capabilities' `send_letter(queued=True)`, which marks
    the letter sent and removes its queued row in one transaction."""

    def __init__(
        self,
        records: Records,
        send: Callable[[SendLetter], Awaitable[Any]],
        cloud: str | None,
        *,
        poll_s: float = 5.0,
        batch: int = 64,
        at_once: int = 8,
    ) -> None:
        self.records = records
        self.send = send
        self.cloud = cloud
        self.poll_s = poll_s
        self.batch = batch
        self._at_once = at_once
        self._wake: asyncio.Event | None = None
        self._traces: dict[str, otel_context.Context] = {}

    def wake(self, keys: Sequence[str] = ()) -> None:
        """Letters were queued by this process: send them now, not at the next poll, in the
        trace of the change that queued them (a letter another worker sends begins its own)."""
        if len(self._traces) < TRACES_KEPT:
            context = otel_context.get_current()
            self._traces.update(dict.fromkeys(keys, context))
        if self._wake is not None:
            self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LetterRelay]:
        """The relay, for as long as the block runs (the worker's life)."""
        self._wake = asyncio.Event()
        task = asyncio.create_task(self._run(), name="letter-relay")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._wake = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                sent = await self.drain()
            except Exception as error:  # the records are down: wait, as for any outage
                log.warning("letters.relay_waits", error=type(error).__name__)
                sent = 0
            if sent:
                continue  # maybe more behind them
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)

    async def drain(self) -> int:
        """One batch of the letters due now, `at_once` lifecycles at a time, each lifecycle's in
        the order queued (its reader gets "accepted" before "ended"); how many went."""
        now = utc_now()
        due = await asyncio.to_thread(self.records.letters_claim, self.cloud, now, until=now + CLAIM, limit=self.batch)
        by_lifecycle: dict[str, list[QueuedLetter]] = {}
        for queued in due:
            by_lifecycle.setdefault(queued.letter.get("workflow_id", ""), []).append(queued)
        gate = asyncio.Semaphore(self._at_once)

        async def in_order(letters: list[QueuedLetter]) -> int:
            async with gate:
                for i, queued in enumerate(letters):
                    retry_at = await self._deliver(queued)
                    if retry_at is not None:  # the rest wait behind it, in their order
                        rest = [q.key for q in letters[i + 1 :]]
                        await asyncio.to_thread(self.records.letters_behind, rest, retry_at)
                        return i
                return len(letters)

        return sum(await asyncio.gather(*(in_order(letters) for letters in by_lifecycle.values())))

    async def _deliver(self, queued: QueuedLetter) -> datetime | None:
        """Send one letter; None when it went (or needs not), else when it is tried again."""
        letter = SendLetter.model_validate(queued.letter)
        trace_of = self._traces.pop(queued.key, None)
        try:
            with _tracer().start_as_current_span("letter.send", context=trace_of, attributes={"letter": letter.letter}):
                sent = await self.send(letter)
        except Exception as error:
            attempts = queued.attempts
            log.warning("letters.send_failed", key=queued.key, attempts=attempts, error=type(error).__name__)
            later = utc_now() + wait_after(attempts)
            await asyncio.to_thread(self.records.letter_later, queued.key, due_at=later, error=type(error).__name__)
            return later
        if not getattr(sent, "message_id", ""):  # nobody to send it to, or a dead link: it goes unsent
            await asyncio.to_thread(self.records.letter_sent, queued.key)
        return None  # sent: its queued row went with the outbox's "sent"
