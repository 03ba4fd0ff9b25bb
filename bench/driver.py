"""The client side, the same for every variant: raw contract JSON, bounded concurrency.

One lifecycle is: update-with-start (`started`, which answers once the relationship is
`invited`: partnerflow's own client and importer start this way) → the token read from
the invitation email in the sink → `accept_invitation` (its round trip is timed) →
`set_purchase_permission` → `end_relationship` (answers `ended`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from partnerflow.runtime.keys import Signer, ensure_dev_keys
from partnerflow.states.models import Actor

T = TypeVar("T")

PARTNER = "p-bench"
IMPORT_PARTNER = "p-import"  # the bulk import's rows
SAM = {"user": "sam@fabrikam.example", "role": "sales_agent", "partner_id": PARTNER}
ADA = {"user": "ada@fabrikam.example", "role": "admin_agent", "partner_id": PARTNER}
ALEX = {"user": "Alex Wilber", "email": "admin@contoso.example"}
LINK = re.compile(rb"relationship=([^&\s]+)&token=([A-Za-z0-9_-]+)")
#: The invitation, the partner's notice of the acceptance, the customer's of the end.
LETTERS_PER_LIFECYCLE = 3
#: A lifecycle that takes longer than this is a broken run, not a slow one.
LIFECYCLE_TIMEOUT_S = 300.0


#: The key every variant's requests are signed with (only partnerflow checks it): `make run`'s
#: development key, whose public half the partnerflow worker is given (bench/worker.py).
KEYS = Path(__file__).resolve().parent.parent / ".dev" / "keys"


def signer() -> Signer:
    ensure_dev_keys(KEYS)
    return Signer.from_file("partner-services", KEYS / "partner-services.pem")


SIGNER = signer()


def signed(payload: dict[str, Any], action: str, wid: str) -> dict[str, Any]:
    """A request as a backend service sends it: with a fresh assertion for its actor."""
    return {**payload, "proof": SIGNER.for_actor(action, wid, Actor.model_validate(payload["actor"]))}


def start_input(customer_id: str) -> dict[str, Any]:
    """The contract's start input (CONTRACT.md), as raw JSON, signed."""
    return signed(_start_input(customer_id), "invite", workflow_id(customer_id))


def _start_input(customer_id: str) -> dict[str, Any]:
    return {
        "cloud": "public",
        "partner": {"id": PARTNER, "name": "Fabrikam", "kind": "direct"},
        "customer": {
            "id": customer_id,
            "company": "Contoso Ltd",
            "admin_email": "admin@contoso.example",
            "country": "US",
        },
        "origin": "invitation",
        "actor": SAM,
    }


def workflow_id(customer_id: str) -> str:
    return f"relationship/{PARTNER}/{customer_id}"


class Inbox:
    """Tokens from the invitation emails the sink writes (one Maildir file per message).

    One task polls `new/` every few milliseconds, takes the token out of each invitation
    and deletes every file, so the folder stays small however many lifecycles run.
    """

    def __init__(self, maildir: Path, interval_s: float = 0.005) -> None:
        self.new = maildir / "new"
        self.interval_s = interval_s
        self._tokens: dict[str, str] = {}
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self.messages = 0

    def scan(self) -> None:
        for name in os.listdir(self.new):
            path = self.new / name
            data = path.read_bytes()
            path.unlink()
            self.messages += 1
            found = LINK.search(data)
            if not found:
                continue  # a notice
            wid, token = unquote(found[1].decode()), found[2].decode()
            waiter = self._waiting.pop(wid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(token)
            else:
                self._tokens[wid] = token

    async def run(self) -> None:
        while True:
            self.scan()
            await asyncio.sleep(self.interval_s)

    async def token(self, wid: str, timeout_s: float = 60.0) -> str:
        if wid in self._tokens:
            return self._tokens.pop(wid)
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[wid] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        finally:
            self._waiting.pop(wid, None)

    async def received(self, count: int, timeout_s: float = 120.0) -> None:
        """Until the sink has taken `count` messages in all (letters a worker sends after the change)."""
        deadline = time.monotonic() + timeout_s
        while self.messages < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.messages} of {count} emails after {timeout_s:.0f} s")
            await asyncio.sleep(self.interval_s)

    def forget(self) -> None:
        self._tokens.clear()

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[Inbox]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _state(view: Any) -> str:
    return str(view["state"]) if isinstance(view, dict) else "?"


async def start(client: Client, task_queue: str, customer_id: str) -> None:
    """Update-with-start: returns once the relationship is `invited`."""
    wid = workflow_id(customer_id)
    operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        "Relationship",
        start_input(customer_id),
        id=wid,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    view = await client.execute_update_with_start_workflow(
        "started", start_workflow_operation=operation, result_type=dict
    )
    if _state(view) != "invited":
        raise RuntimeError(f"{wid}: started answered {_state(view)}, not invited")


async def lifecycle(client: Client, task_queue: str, customer_id: str, inbox: Inbox | None) -> float:
    """One whole lifecycle; returns the `accept_invitation` round trip in milliseconds."""
    wid = workflow_id(customer_id)
    await start(client, task_queue, customer_id)
    token = await inbox.token(wid) if inbox is not None else "floor-has-no-token"
    handle = client.get_workflow_handle(wid)
    accept = {"token": token, "customer_admin": ALEX, "accept_agreement": True}
    began = time.perf_counter()
    view = await handle.execute_update("accept_invitation", accept, result_type=dict)
    accept_ms = (time.perf_counter() - began) * 1000
    steps: list[tuple[str, dict[str, Any], str]] = [
        ("set_purchase_permission", {"actor": ADA, "allowed": True}, "active"),
        ("end_relationship", {"actor": SAM, "reason": "contract over"}, "ended"),
    ]
    if _state(view) != "active":
        raise RuntimeError(f"{wid}: accept_invitation answered {_state(view)}")
    for name, payload, expected in steps:
        view = await handle.execute_update(name, signed(payload, name, wid), result_type=dict)
        if _state(view) != expected:
            raise RuntimeError(f"{wid}: {name} answered {_state(view)}, not {expected}")
    return accept_ms


async def bounded(jobs: Iterable[Callable[[], Awaitable[T]]], concurrency: int, timeout_s: float) -> list[T]:
    """Run `jobs` with at most `concurrency` in flight; the first failure stops them all."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await asyncio.wait_for(job(), timeout_s)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(job)) for job in jobs]
    return [t.result() for t in tasks]


@dataclass
class Lifecycles:
    """The client-side outcome of one batch of lifecycles."""

    seconds: float
    accept_ms: list[float] = field(default_factory=list)


async def run_lifecycles(
    client: Client, task_queue: str, customer_ids: list[str], inbox: Inbox | None, concurrency: int
) -> Lifecycles:
    """The batch, timed until its last email has arrived too: a variant that answers before its
    notices are sent (partnerflow's relay) is measured with all its work done, as the others."""

    def job(cid: str) -> Callable[[], Awaitable[float]]:
        return lambda: lifecycle(client, task_queue, cid, inbox)

    before = inbox.messages if inbox is not None else 0
    began = time.perf_counter()
    accept_ms = await bounded((job(c) for c in customer_ids), concurrency, LIFECYCLE_TIMEOUT_S)
    if inbox is not None:
        await inbox.received(before + LETTERS_PER_LIFECYCLE * len(customer_ids))
    return Lifecycles(time.perf_counter() - began, accept_ms)


async def start_many(client: Client, task_queue: str, customer_ids: list[str], concurrency: int) -> float:
    """Start every relationship and wait until each is `invited`; returns the seconds taken."""

    def job(cid: str) -> Callable[[], Awaitable[None]]:
        return lambda: start(client, task_queue, cid)

    began = time.perf_counter()
    await bounded((job(c) for c in customer_ids), concurrency, LIFECYCLE_TIMEOUT_S)
    return time.perf_counter() - began
