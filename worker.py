"""The worker process: config → logging → Temporal clients → one Worker per cloud namespace.

The only place that wires things together. Run it as `python worker.py`; any
number of these may share a task queue. SIGINT/SIGTERM stop it cleanly: workers
finish their in-flight tasks first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer
from partnerflow.activities.records import Records
from partnerflow.activities.relay import LetterRelay
from partnerflow.runtime import logs, search_attributes, tracing
from partnerflow.runtime.config import Settings, WorkerSettings, load
from partnerflow.runtime.connection import connect
from partnerflow.runtime.migrate import upgrade
from partnerflow.runtime.process import exit_without_teardown, run
from partnerflow.states.models import Cloud
from partnerflow.states.names import TASK_QUEUE
from partnerflow.workflows.arguments import ArgumentsInterceptor
from partnerflow.workflows.lifecycles import WORKFLOWS
from partnerflow.workflows.proving import ProofInterceptor
from partnerflow.workflows.webhook import WebhookWorkflow

log = structlog.get_logger("partnerflow.worker")

#: Passed through to the workflow sandbox, never imported again inside it. cryptography's Rust
#: core imports Python modules lazily, on first use in the process: `cryptography.exceptions` for
#: the first bad signature, the OpenSSL backend for the first ECDSA check. In an update validator
#: (`states/proof.py`) that import went through the sandbox, which re-ran the Rust extension: a
#: SystemError, which aborted the whole process (a bad signature: the Rust side panics) or
#: refused a genuine ES256 proof.
#:
#: The declared lifecycles' workflows run outside the sandbox (`workflows.interpreter.SANDBOXED`
#: says why); the sandbox is for the webhook deliveries' workflow and any workflow of a team's
#: own given to `new_worker`. partnerflow itself passes through it: re-imported for every
#: workflow, the engine took a quarter of the worker's profile samples (BENCHMARKS.md); its
#: module-level state is declarations, read-only.
SANDBOX = SandboxRestrictions.default.with_passthrough_modules("cryptography", "jwt", "partnerflow")


class RelayingWorker(Worker):
    """A Temporal worker that runs its capabilities' letter relay for as long as it runs, and
    says goodbye on the mail server connections it kept."""

    def __init__(self, client: Client, *, relay: LetterRelay, mailer: Mailer, **options: Any) -> None:
        super().__init__(client, **options)
        self._relay = relay
        self._mailer = mailer

    async def run(self) -> None:
        try:
            async with self._relay.running():
                await super().run()
        finally:
            await asyncio.to_thread(self._mailer.close)


def build_activities(settings: Settings) -> dict[Cloud, Capabilities]:
    """One set of activities per configured cloud, sharing the database and the mailer."""
    upgrade(settings.records_url)  # the schema, by Alembic migrations (idempotent)
    records = Records(settings.records_url)
    if tracing.enabled():
        tracing.instrument_engine(records.engine)
    mailer = Mailer(settings.smtp.settings())
    link, key = settings.invitation.link_base_url, settings.invitation.resolved_token_key()
    verifier = settings.verifier()
    if verifier.mode == "trusted":
        log.warning("worker.trusted_callers", hint="proof.mode is trusted: every caller is believed (SECURITY.md)")
    elif not verifier.issuers:
        log.warning("worker.no_issuers", hint="proof.issuers is empty: every start and partner update is refused")
    if key is None:
        log.warning(
            "worker.no_token_key",
            hint="set PARTNERFLOW_INVITATION__TOKEN_KEY (shared by all workers): without it, an invitation"
            " retried on another worker after a crash goes out again with a new link",
        )
    keyring = settings.keyring()
    if keyring is None:
        log.warning(
            "worker.payloads_in_plain_text", hint="no encryption keyring: names and emails are readable in Temporal"
        )
    else:
        log.info("worker.payloads_sealed", active_key=keyring.active, keys=len(keyring.keys))
    return {
        cloud: Capabilities(records, mailer, link, cloud.value, token_key=key, verifier=verifier)
        for cloud in settings.temporal.clouds
    }


def new_worker(
    client: Client,
    activities: Capabilities,
    task_queue: str = TASK_QUEUE,
    tuning: WorkerSettings | None = None,
    workflows: Sequence[type] | None = None,
) -> Worker:
    """A worker for `workflows` (default: every declared lifecycle's) and the activities."""
    t = tuning or WorkerSettings()
    classes = list(workflows or [*WORKFLOWS.values(), WebhookWorkflow])
    options: dict[str, Any] = {
        name: value
        for name in (
            "max_concurrent_workflow_tasks",
            "max_concurrent_activities",
            "max_concurrent_local_activities",
        )
        if (value := getattr(t, name)) is not None
    }
    return RelayingWorker(
        client,
        relay=activities.relay,
        mailer=activities.mailer,
        task_queue=task_queue,
        workflows=classes,
        activities=activities.all(),
        workflow_runner=SandboxedWorkflowRunner(restrictions=SANDBOX),
        interceptors=[
            ArgumentsInterceptor(*(c for c in classes if c is not WebhookWorkflow)),
            ProofInterceptor(activities.verifier),
        ],
        max_cached_workflows=t.max_cached_workflows,
        # SIGTERM lets in-flight activities (an email mid-send) finish first.
        graceful_shutdown_timeout=timedelta(seconds=t.graceful_shutdown_s),
        **options,
    )


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting the SDK's metrics and our counters to Prometheus, if configured."""
    if not settings.metrics.prometheus:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=settings.metrics.prometheus)))


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    try:
        added = await search_attributes.register(client, namespace)
    except RPCError as error:  # e.g. Temporal Cloud: register them with its own tools
        log.warning("worker.search_attributes_unchecked", namespace=namespace, error=error.message)
        return
    if added:
        log.info("worker.search_attributes_added", namespace=namespace, added=added)


def keep_bytecode() -> None:
    """The workflow sandbox imports a sandboxed workflow's module (the webhook deliveries', a
    team's own) again for every workflow it runs; where bytecode is not written
    (PYTHONDONTWRITEBYTECODE, common in container images) each of those compiles it from
    source. Keep bytecode in a private folder instead: the source tree stays as clean as the
    setting intends."""
    if sys.dont_write_bytecode:
        sys.pycache_prefix = sys.pycache_prefix or str(Path(tempfile.gettempdir()) / f"partnerflow-pyc-{os.getuid()}")
        sys.dont_write_bytecode = False


def settle_memory() -> None:
    """Once everything is imported and built: the cyclic garbage collector walks every live
    object in its oldest generation, and a worker holds a large, permanent graph (modules,
    pydantic schemas, the SDK). Freezing it takes it out of every later walk; the measured
    share of the worker's CPU in the collector fell from about 12% (BENCHMARKS.md)."""
    gc.collect()
    gc.freeze()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run one worker per configured cloud until `stop` is set."""
    keep_bytecode()
    activities = build_activities(settings)
    runtime = metrics_runtime(settings)
    async with contextlib.AsyncExitStack() as stack:
        for cloud in settings.temporal.clouds:
            namespace = settings.temporal.namespace(cloud)
            client = await connect(settings, cloud, runtime)
            await ensure_search_attributes(client, namespace)
            await stack.enter_async_context(new_worker(client, activities[cloud], tuning=settings.worker))
            log.info("worker.started", namespace=namespace, task_queue=TASK_QUEUE)
        if runtime:
            log.info("worker.metrics", prometheus=f"http://{settings.metrics.prometheus}/metrics")
        settle_memory()
        await stop.wait()
        log.info("worker.stopping")
    for acts in activities.values():
        acts.records.dispose()
    log.info("worker.stopped")


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _main() -> None:
    settings = load()
    logs.configure(settings.log.format, settings.log.level)
    provider = tracing.configure(settings.tracing.otlp_endpoint, "partnerflow-worker")
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await serve(settings, stop)
    finally:
        if provider:
            provider.shutdown()  # the last spans out before the process ends (os._exit)


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main)


if __name__ == "__main__":
    exit_without_teardown(main())
