"""One benchmark worker process: `python -m bench.worker VARIANT --address … --task-queue …`.

Each variant runs in a process of its own, so its CPU time and peak memory can be read
from /proc. Logging is set up as partnerflow's worker does it (JSON lines, INFO) for all
four, to a file. SIGTERM or SIGINT stops it; on the way out it writes its own
`getrusage` next to the ready file, as a cross-check of what /proc said.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.worker import Worker

from bench.driver import IMPORT_PARTNER, KEYS, PARTNER
from bench.floor import ACTIVITIES as FLOOR_ACTIVITIES
from bench.floor import FloorWorkflow
from bench.handwritten import HandwrittenActivities, HandwrittenRelationship, TunedRelationship
from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.runtime import logs
from partnerflow.runtime.converter import data_converter
from partnerflow.states.models import Partner
from partnerflow.states.proof import Issuer, Verifier, key_set
from partnerflow.worker import new_worker, settle_memory

VARIANTS = ("floor", "handwritten", "handwritten_tuned", "partnerflow")
LINK_BASE = "http://portal.bench"


async def build(args: argparse.Namespace) -> tuple[Worker, Records | None]:
    """The variant's worker; partnerflow's exactly as `worker.py` makes it (its defaults)."""
    if args.variant == "floor":
        client = await Client.connect(args.address, namespace=args.namespace)
        worker = Worker(client, task_queue=args.task_queue, workflows=[FloorWorkflow], activities=FLOOR_ACTIVITIES)
        return worker, None
    records = Records(args.records)
    records.create_schema()
    mailer = Mailer(SmtpSettings(port=args.smtp_port))
    if args.variant in ("handwritten", "handwritten_tuned"):
        tuned = args.variant == "handwritten_tuned"
        converter = pydantic_data_converter if tuned else DataConverter.default
        client = await Client.connect(args.address, namespace=args.namespace, data_converter=converter)
        hand = HandwrittenActivities(records, mailer, LINK_BASE)
        workflow = TunedRelationship if tuned else HandwrittenRelationship
        worker = Worker(client, task_queue=args.task_queue, workflows=[workflow], activities=hand.all())
        return worker, records
    client = await Client.connect(args.address, namespace=args.namespace, data_converter=data_converter)
    # Proven mode, as `make run`: the driver signs each request with the development key.
    jwks = key_set((KEYS / "partner-services.jwks.json").read_text())
    verifier = Verifier(issuers={"partner-services": Issuer("partner-services", jwks, frozenset({"partner_staff"}))})
    for partner_id in (PARTNER, IMPORT_PARTNER):  # the registry: the driver's partner and the import's
        records.put_partner("public", Partner(id=partner_id, name="Fabrikam"), now=datetime.now(UTC))
    # A shared invitation token key, as `make run` and a deployment have one (worker.no_token_key).
    key = secrets.token_bytes(32)
    activities = Capabilities(records, mailer, LINK_BASE, "public", token_key=key, verifier=verifier)
    return new_worker(client, activities, args.task_queue), records


class GcClock:
    """How long the cyclic garbage collector ran, by generation: it walks every live object,
    so its cost grows with what the worker keeps in memory (cached workflows)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._began
            self.collections[info["generation"]] += 1


async def serve(args: argparse.Namespace) -> None:
    gc_clock = GcClock()
    logs.configure("json", "INFO")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker, records = await build(args)
    async with worker:
        if args.variant == "partnerflow":
            settle_memory()  # as worker.py does once it is up
        Path(args.ready_file).write_text(str(os.getpid()))
        await stop.wait()
    if records is not None:
        records.dispose()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": usage.ru_maxrss / 1024,
        "gc_s": sum(gc_clock.seconds),
        "gc_s_by_generation": gc_clock.seconds,
        "gc_collections": gc_clock.collections,
    }
    Path(args.ready_file + ".exit.json").write_text(json.dumps(report))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="relationships")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--records", default="sqlite://", help="records database URL")
    parser.add_argument("--smtp-port", type=int, default=0)
    parser.add_argument("--ready-file", required=True, help="written (with the pid) once the worker polls")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
