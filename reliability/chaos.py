"""Whole relationship lives driven while partnerflow's parts fail around them.

One run: a Temporal dev server on a SQLite file, `worker.py` as a process of its own,
records on a throwaway PostgreSQL, a real SMTP sink, the acceptance page (`python -m partnerflow.portal`)
as a process of its own. Relationships go invite → accept (the customer's admin, through the
page) → purchase permission → end → reinstate → accept while every process partnerflow runs
in production is SIGKILLed now and then and started again (the worker every few seconds, the
page too), the dev server is restarted once (and, if the plan says so, again in the middle of
the verification), the SMTP server is down for a while and the database is down for a while.
The driver behaves like a careful backend service: it retries a call that did not get an
answer with the same update id, and never retries one that got a refusal. What is checked
afterwards lives in `reliability.verify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError

from partnerflow.activities.records import Records
from partnerflow.client import Relationships, Unavailable
from partnerflow.events import Events, Subscribed
from partnerflow.mailsink import MailSink
from partnerflow.pgcluster import ThrowawayPostgres
from partnerflow.runtime import search_attributes
from partnerflow.runtime.codec import Keyring, data_converter_for
from partnerflow.runtime.keys import Signer, ensure_dev_keys
from partnerflow.states.models import (
    Actor,
    Cloud,
    InvitationLookup,
    InvitationStatus,
    InvitationView,
    RelationshipView,
    StartRelationship,
)
from partnerflow.states.names import NAMESPACES
from partnerflow.testing import ADMIN, BIN, actor, free_port, register_partners, start_input
from reliability.inbox import Inbox
from reliability.receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
PARTNER = "p-chaos"
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """What to break and when. Outages start once that fraction of all steps is done."""

    relationships: int = 500
    concurrency: int = 50
    kill_every_s: tuple[float, float] = (2.0, 6.0)
    server_restart_at: float = 0.25
    smtp_outage_at: float = 0.45
    smtp_down_s: float = 60.0
    db_outage_at: float = 0.70
    db_down_s: float = 30.0
    page_kill_every_s: tuple[float, float] = (5.0, 15.0)
    receiver_outage_at: float = 0.55  # the partner's webhook receiver goes down ...
    receiver_down_s: float = 60.0  # ... for this long
    restart_during_verify: bool = True  # the awkward moment: the server goes away mid-verification
    patience_s: float = 600.0  # how long a call is repeated before it is a finding (NoAnswer)
    seed: int = 7


#: The steps of one life after its start, in order (update name, what it sends).
STEPS = ("accept_invitation", "set_purchase_permission", "end_relationship", "reinstate", "accept_invitation")


class NoAnswer(Exception):
    """A call repeated for `Plan.patience_s` without an answer: reported, the run goes on."""


@dataclass
class Tally:
    """What happened during the run (faults made, lives finished, what went wrong)."""

    worker_kills: int = 0
    worker_starts: int = 0
    page_kills: int = 0
    page_starts: int = 0
    page_retries: int = 0  # a page answer not had (down, restarting, Temporal away): asked again
    server_restarts: int = 0
    smtp_outages: list[float] = field(default_factory=list)
    receiver_outages: list[float] = field(default_factory=list)
    db_outages: list[float] = field(default_factory=list)
    steps_done: int = 0
    transient_retries: int = 0
    refused: list[str] = field(default_factory=list)  # an update the workflow refused: a real failure
    errors: list[str] = field(default_factory=list)  # anything else that stopped a life
    seconds: float = 0.0


class DevServer:
    """`temporal server start-dev` on a SQLite file, so a restart keeps everything."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.db = work / "temporal.db"
        self.log = work / "temporal.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            str(BIN / "temporal"),
            *("server", "start-dev", "--headless", "--ip=127.0.0.1", f"--port={self.port}"),
            *(f"--db-filename={self.db}", "--log-level=error"),
            *(f"--namespace={n}" for n in NAMESPACES.values()),
            *search_attributes.cli_flags(),
        ]
        self.process = subprocess.Popen(command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        for _ in range(600):
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the dev server exited; see {self.log}")
            with contextlib.suppress(Exception):
                client = await Client.connect(self.address, namespace=NAMESPACES[Cloud.PUBLIC])
                await client.count_workflows()  # the namespace answers, not only the frontend
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the dev server did not come up; see {self.log}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class WorkerProcess:
    """`python worker.py`, configured by environment as an operator would."""

    def __init__(self, work: Path, address: str, records_url: str, smtp_port: int, keyring: Keyring) -> None:
        self.log = work / "worker.log"
        self.env = {
            **os.environ,
            "PARTNERFLOW_ENCRYPTION__KEYS": keyring.to_json(),  # sealed, as a deployment is
            "PARTNERFLOW_TEMPORAL__ADDRESS": address,
            "PARTNERFLOW_RECORDS__URL": records_url,
            "PARTNERFLOW_SMTP__PORT": str(smtp_port),
            "PARTNERFLOW_LOG__FORMAT": "json",
            "PARTNERFLOW_METRICS__PROMETHEUS": "",
            "PARTNERFLOW_INVITATION__TOKEN_KEY": secrets.token_urlsafe(32),  # shared by every restart
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._from, self._serving = 0, False  # where this start's log begins; polling yet

    def start(self) -> None:
        self._from = self.log.stat().st_size if self.log.exists() else 0
        self._serving = False
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def serving(self) -> bool:
        """Alive, and polling: its log says so since this start."""
        if not self.alive():
            return False
        if not self._serving:
            with self.log.open("rb") as log:
                log.seek(self._from)
                self._serving = b'"worker.started"' in log.read()
        return self._serving

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)  # no goodbye: its tasks are simply abandoned
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


class PageProcess(WorkerProcess):
    """`python -m partnerflow.portal`, the customer's acceptance page, on a port of its own."""

    def __init__(self, work: Path, address: str, keyring: Keyring) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "portal.log"
        self.env = {
            **os.environ,
            "PARTNERFLOW_ENCRYPTION__KEYS": keyring.to_json(),
            "PARTNERFLOW_TEMPORAL__ADDRESS": address,
            "PARTNERFLOW_TEMPORAL__CLOUDS": "[public]",
            "PARTNERFLOW_PORTAL__PORT": str(self.port),
            "PARTNERFLOW_PORTAL__CSRF_KEY": secrets.token_urlsafe(32),  # a form outlives a restart
            "PARTNERFLOW_PORTAL__MIN_ANSWER_MS": "50",
            # Every customer of the run comes from 127.0.0.1, and a link reopened after the page
            # died counts as a miss: the per-address limit is for one person, not for a crowd.
            "PARTNERFLOW_PORTAL__WRONG_TOKEN_LIMIT": "1000000",
            "PARTNERFLOW_LOG__FORMAT": "json",
        }
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "partnerflow.portal"],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )


class Chaos:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.rng = random.Random(plan.seed)
        self.tally = Tally()
        self.server = DevServer(work)
        self.postgres = ThrowawayPostgres("chaos")
        # The customers' mail system: like Exchange or Gmail, it keeps one copy per Message-ID.
        self.sink = MailSink(work / "mail", port=free_port(), fold_redeliveries=True)
        self.inbox = Inbox(work / "mail")
        # The partner's webhook receiver: every event of the run is delivered to it (events out).
        self.receiver = Receiver(free_port())
        self.webhook: Subscribed | None = None
        self.worker: WorkerProcess | None = None
        self.page: PageProcess | None = None
        self.client: Client | None = None
        self.signer: Signer | None = None  # temporal-dev.yml's partner-services key, as `make run` makes it
        self.starts: list[StartRelationship] = []
        self._calm = asyncio.Event()  # set while the worker must stay up (the end of the run)
        self._server_down = asyncio.Event()

    # --- the run ---------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Chaos]:
        self.postgres.start()
        self.sink.start()
        self.server.start()
        try:
            await self.server.ready()
            from partnerflow.runtime.migrate import upgrade

            upgrade(self.postgres.url)
            register_partners(Records(self.postgres.url), start_input(partner={"id": PARTNER}))
            ensure_dev_keys(ROOT / ".dev" / "keys")  # the worker believes temporal-dev.yml's issuers
            self.signer = Signer.from_file("partner-services", ROOT / ".dev" / "keys" / "partner-services.pem")
            keyring = Keyring.generate("chaos")
            self.worker = WorkerProcess(self.work, self.server.address, self.postgres.url, self.sink.port, keyring)
            self.worker.start()
            self.tally.worker_starts += 1
            self.page = PageProcess(self.work, self.server.address, keyring)
            self.page.start()
            self.tally.page_starts += 1
            self.client = await Client.connect(
                self.server.address, namespace=NAMESPACES[Cloud.PUBLIC], data_converter=data_converter_for(keyring)
            )
            await self.receiver.start()
            records = Records(self.postgres.url)
            try:  # the whole log, waits capped low so a receiver back after its outage is soon served
                events = Events(records, {Cloud.PUBLIC: self.client})
                self.webhook = await events.subscribe(
                    Cloud.PUBLIC, PARTNER, self.receiver.url, from_start=True, max_interval=timedelta(seconds=5)
                )
                self.receiver.secret = self.webhook.secret
            finally:
                records.dispose()
            yield self
        finally:
            if self.page:
                self.page.stop()
            if self.worker:
                self.worker.stop()
            with contextlib.suppress(Exception):
                await self.receiver.stop()
            self.server.stop()
            with contextlib.suppress(Exception):
                self.sink.stop()
            self.postgres.stop()

    async def drive(self) -> Tally:
        """Every life to its end while the faults happen; returns what was done to it."""
        plan = self.plan
        ids = [f"c-{i:04d}" for i in range(plan.relationships)]
        self.starts = [
            StartRelationship.model_validate(
                start_input(
                    partner={"id": PARTNER, "contact_email": "ops@fabrikam.example"},
                    actor={"partner_id": PARTNER},
                    customer={"id": cid, "company": f"Contoso {cid}", "admin_email": f"admin@{cid}.example"},
                )
            )
            for cid in ids
        ]
        began = time.monotonic()
        gate = asyncio.Semaphore(plan.concurrency)

        async def one(start: StartRelationship) -> None:
            async with gate:
                try:
                    await self.life(start)
                except Exception as error:  # counted (that life is not where it should be), never fatal
                    self.tally.errors.append(f"{start.workflow_id}: {error!r}")

        faults = [
            asyncio.create_task(self.kill_worker_now_and_then()),
            asyncio.create_task(self.kill_page_now_and_then()),
            asyncio.create_task(self.at(plan.server_restart_at, self.restart_server)),
            asyncio.create_task(self.at(plan.smtp_outage_at, self.smtp_outage)),
            asyncio.create_task(self.at(plan.db_outage_at, self.db_outage)),
            asyncio.create_task(self.at(plan.receiver_outage_at, self.receiver_outage)),
        ]
        async with self.inbox.watching():
            try:
                await asyncio.gather(*(one(s) for s in self.starts))
                await asyncio.gather(*faults[2:])  # an outage still under way ends first
            finally:
                for task in faults:
                    task.cancel()
                await asyncio.gather(*faults, return_exceptions=True)
        self._calm.set()
        self.ensure_worker()
        self.ensure_page()
        self.tally.seconds = time.monotonic() - began
        return self.tally

    async def life(self, start: StartRelationship) -> None:
        wid = start.workflow_id
        assert self.signer is not None
        view = await self.patiently(Relationships(self.clients(), signer=self.signer).start, start)
        used: set[str] = set()
        for n, name in enumerate(STEPS):
            payload: dict[str, Any]
            if name == "accept_invitation":  # the customer's admin, on the page the link opens
                token = await self.live_token(wid, used)
                used.add(token)
                if not await self.accept_on_the_page(wid, token):
                    self.tally.refused.append(f"{wid} {name}: the page did not take the answer")
                    return
                self.tally.steps_done += 1
                continue
            if name == "set_purchase_permission":
                payload = {"actor": actor("admin_agent", PARTNER), "allowed": True}
            else:
                payload = {"actor": actor("sales_agent", PARTNER)}
            try:
                view = await self.patiently(self.update, wid, name, payload, f"{wid}/chaos/{n}")
            except WorkflowUpdateFailedError as refused:
                self.tally.refused.append(f"{wid} {name}: {refused.cause}")
                return
            self.tally.steps_done += 1
        del view

    # --- talking to partnerflow like a careful backend service ---------------------------
    def clients(self) -> dict[Cloud, Client]:
        assert self.client is not None
        return {Cloud.PUBLIC: self.client}

    async def update(self, wid: str, name: str, payload: dict[str, Any], update_id: str) -> RelationshipView:
        assert self.client is not None and self.signer is not None
        handle = self.client.get_workflow_handle(wid)
        if "actor" in payload:  # signed per attempt: a retry after an outage carries a fresh proof
            payload = {**payload, "proof": self.signer.for_actor(name, wid, Actor.model_validate(payload["actor"]))}
        view: RelationshipView = await handle.execute_update(name, payload, id=update_id, result_type=RelationshipView)
        return view

    async def patiently(self, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Repeat a call that got no answer (server restarting, worker gone); a refusal is final.
        Repeating is safe: starts are idempotent by workflow id, updates by their id. After
        `Plan.patience_s` it gives up (`NoAnswer`): a finding of the run, never a run that hangs."""
        deadline = time.monotonic() + self.plan.patience_s
        while time.monotonic() < deadline:
            try:
                return await asyncio.wait_for(call(*args, **kwargs), timeout=120)
            except (
                RPCError,  # the server restarting
                Unavailable,  # the same, through the typed client
                WorkflowUpdateRPCTimeoutOrCancelledError,  # no answer yet: the same id again
                WorkflowQueryFailedError,  # no worker to answer a query at the moment
                TimeoutError,
            ):
                self.tally.transient_retries += 1
                await asyncio.sleep(1.0)
        raise NoAnswer(f"{getattr(call, '__name__', call)}: no answer in {self.plan.patience_s:g} s")

    async def accept_on_the_page(self, wid: str, token: str) -> bool:
        """Open the link, tick the agreement, send the form: as a person would, again after a
        page that did not answer (killed, restarting, Temporal away). True once accepted."""
        assert self.page is not None and self.client is not None
        handle = self.client.get_workflow_handle(wid)
        while True:
            try:
                async with httpx.AsyncClient(base_url=self.page.url, timeout=60) as browser:
                    shown = await browser.get("/invitation", params={"relationship": wid, "token": token})
                    status = shown.status_code
                    if status == 200:
                        form = dict(re.findall(r'name="(csrf|relationship|token)" value="([^"]*)"', shown.text))
                        form |= {"admin_name": ADMIN["user"], "agreement": "yes"}
                        status = (await browser.post("/invitation/accept", data=form)).status_code
                        if status == 200:
                            return True
                    if status < 500 and status != 429:  # 429: too many at once; a person waits
                        # No longer valid: an earlier answer reached the workflow before the page
                        # died; it may still be being applied (a worker killed meanwhile).
                        return await self.becomes_active(handle)
            except httpx.TransportError:
                pass  # the page is down: a person would reload
            self.tally.page_retries += 1
            await asyncio.sleep(1.0)

    async def becomes_active(self, handle: WorkflowHandle[Any, Any], within_s: float = 300.0) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            view: RelationshipView = await self.patiently(handle.query, "state", result_type=RelationshipView)
            if view.state == "active":
                return True
            await asyncio.sleep(0.5)
        return False

    async def live_token(self, wid: str, used: set[str]) -> str:
        """The token of the live invitation, read from the customer's inbox (the sink)."""
        assert self.client is not None
        handle = self.client.get_workflow_handle(wid)
        while True:
            for token in reversed(self.inbox.tokens(wid)):
                if token in used:
                    continue
                lookup = InvitationLookup(token=token)
                found = await self.patiently(handle.query, "invitation", lookup, result_type=InvitationView)
                if found.status == InvitationStatus.VALID:
                    return token
            await self.inbox.changed()

    # --- the faults ------------------------------------------------------------------
    def progress(self) -> float:
        return self.tally.steps_done / (self.plan.relationships * len(STEPS))

    async def at(self, fraction: float, fault: Callable[[], Awaitable[None]]) -> None:
        while self.progress() < fraction:
            await asyncio.sleep(0.2)
        await fault()

    def ensure_worker(self) -> None:
        assert self.worker is not None
        if not self.worker.alive():
            self.worker.start()
            self.tally.worker_starts += 1

    async def kill_worker_now_and_then(self) -> None:
        """A kill every few seconds of a worker's service, counted from when it serves: a worker
        killed before it ever polls (its start takes seconds on a busy machine) tests nothing but
        the start, and a crash loop that tight leaves a workflow task no worker ever finishes,
        which the server then retries with a backoff of minutes (a run once stalled on that)."""
        assert self.worker is not None
        low, high = self.plan.kill_every_s
        next_kill: float | None = None
        while True:
            await asyncio.sleep(0.2)
            self.ensure_worker()  # also one that died by itself (the database was down at its start)
            if not self.worker.serving():
                next_kill = None
                continue
            if next_kill is None:
                next_kill = time.monotonic() + self.rng.uniform(low, high)
            elif time.monotonic() >= next_kill:
                self.worker.kill()
                self.tally.worker_kills += 1
                next_kill = None

    def ensure_page(self) -> None:
        assert self.page is not None
        if not self.page.alive():
            self.page.start()
            self.tally.page_starts += 1

    async def kill_page_now_and_then(self) -> None:
        assert self.page is not None
        low, high = self.plan.page_kill_every_s
        while True:
            await asyncio.sleep(self.rng.uniform(low, high))
            self.page.kill()
            self.tally.page_kills += 1
            await asyncio.sleep(0.5)  # a moment with no page: links opened now fail and are opened again
            self.ensure_page()

    async def restart_server(self) -> None:
        await asyncio.to_thread(self.server.stop)
        self.server.start()
        await self.server.ready()
        self.tally.server_restarts += 1

    async def smtp_outage(self) -> None:
        began = time.monotonic()
        self.sink.stop()
        await asyncio.sleep(self.plan.smtp_down_s)
        self.sink.start()
        self.tally.smtp_outages.append(time.monotonic() - began)

    async def receiver_outage(self) -> None:
        began = time.monotonic()
        await self.receiver.stop()
        await asyncio.sleep(self.plan.receiver_down_s)
        await self.receiver.start()
        self.tally.receiver_outages.append(time.monotonic() - began)

    async def db_outage(self) -> None:
        began = time.monotonic()
        await asyncio.to_thread(self.postgres.pause)
        await asyncio.sleep(self.plan.db_down_s)
        await asyncio.to_thread(self.postgres.resume)
        self.tally.db_outages.append(time.monotonic() - began)
