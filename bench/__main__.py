"""`python -m bench` (`make bench`): partnerflow's cost against a hand-written workflow and a floor.

One Temporal dev server (in memory) for the whole run; each variant's worker in a process
of its own, started afresh for every run; the variants alternate (floor, handwritten,
partnerflow, floor, …) over `--rounds` so drift on a shared machine hits all four alike.
Then partnerflow alone: its worker's memory with `--open` relationships waiting in
`invited`, and `partnerflow import` over `--import-rows` rows. Writes `bench/results.json`
and prints a table; see BENCHMARKS.md for the method and the targets.

Quick trial: `python -m bench --n 100 --rounds 1 --open 1000 --import-rows 1000`.
Profile partnerflow's worker (needs py-spy): `python -m bench --profile --n 300`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench import proc
from bench.driver import PARTNER, Inbox, run_lifecycles, start_many, workflow_id
from bench.profile import Profile
from partnerflow.activities.records import Records
from partnerflow.events import Events
from partnerflow.runtime import search_attributes
from partnerflow.runtime.converter import data_converter
from partnerflow.states.models import Cloud
from reliability.receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results.json"
PROFILE_REPORT = ROOT / "bench" / "profile.txt"
NAMESPACE = "relationships"
VARIANTS = ("floor", "handwritten", "handwritten_tuned", "partnerflow")
PREFIX = {"floor": "fl", "handwritten": "hw", "handwritten_tuned": "ht", "partnerflow": "pf"}
#: Ports the machine's own services use: never ours.
RESERVED_PORTS = frozenset({7233, 8233, 1025, 8080, 9464})
HISTORY_SAMPLE = 20
IMPORT_CONCURRENCY = 16


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


# --- processes ---------------------------------------------------------------------------
def _stop(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not gone after `grace_s`: no orphans, whatever happened."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _await_file(path: Path, process: subprocess.Popen[bytes], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def sink_process(work: Path) -> AsyncIterator[tuple[int, Path]]:
    """partnerflow's MailSink on a free port, in its own process; yields (port, maildir)."""
    maildir, port, ready = work / "mail", free_port(), work / "sink.ready"
    with (work / "sink.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", str(maildir), str(port), str(ready)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            await _await_file(ready, process, "the mail sink")
            yield port, maildir
        finally:
            _stop(process, 5)


def worker_environment(work: Path) -> dict[str, str]:
    """The caller's environment without partnerflow's settings, and with bytecode cached.

    Temporal's sandbox imports a workflow's module afresh for every workflow it starts;
    without a cached .pyc (PYTHONDONTWRITEBYTECODE=1, common in containers) it compiles
    the module from source each time. A deployment installed by pip has its .pyc files,
    so the workers get a bytecode cache of their own (in the work folder, not the repo).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERFLOW_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


@dataclass
class WorkerProcess:
    variant: str
    pid: int
    log: Path
    exit_report: Path

    def exit(self) -> dict[str, Any]:
        """The worker's own report, written when it stopped cleanly ({} otherwise)."""
        try:
            report: dict[str, Any] = json.loads(self.exit_report.read_text())
        except (OSError, ValueError):
            return {}
        return report


@contextlib.asynccontextmanager
async def worker_process(
    variant: str, address: str, task_queue: str, work: Path, smtp_port: int, name: str, records: str | None = None
) -> AsyncIterator[WorkerProcess]:
    """The variant's worker in a fresh process (a fresh SQLite records file unless `records`
    names a database), stopped on the way out."""
    ready, log = work / f"{name}.ready", work / f"{name}.log"
    for stale in (ready, Path(f"{ready}.exit.json"), work / f"{name}.db"):
        stale.unlink(missing_ok=True)  # a name used before: its ready file would fool the wait below
    command = [
        sys.executable,
        "-m",
        "bench.worker",
        variant,
        f"--address={address}",
        f"--namespace={NAMESPACE}",
        f"--task-queue={task_queue}",
        f"--records={records or 'sqlite:///' + str(work / (name + '.db'))}",
        f"--smtp-port={smtp_port}",
        f"--ready-file={ready}",
    ]
    env = worker_environment(work)
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            await _await_file(ready, process, f"the {variant} worker")
            yield WorkerProcess(variant, process.pid, log, Path(f"{ready}.exit.json"))
        finally:
            _stop(process)


# --- one run of one variant ---------------------------------------------------------------
@dataclass
class Run:
    variant: str
    round: int
    n: int
    seconds: float
    worker_cpu_s: float
    server_cpu_s: float
    peak_rss_mb: float
    accept_ms: list[float] = field(repr=False)
    events: list[int]
    worker_exit: dict[str, Any]  # what the worker said of itself on the way out (whole life)

    @property
    def lifecycles_per_s(self) -> float:
        return self.n / self.seconds


async def history_events(client: Client, customer_ids: Sequence[str], sample: int = HISTORY_SAMPLE) -> list[int]:
    """Events in the histories of `sample` lifecycles spread over the batch (all are alike)."""
    step = max(1, len(customer_ids) // sample)
    picked = list(customer_ids)[::step][:sample]
    histories = await asyncio.gather(*(client.get_workflow_handle(workflow_id(c)).fetch_history() for c in picked))
    return [len(h.events) for h in histories]


@dataclass
class Bench:
    args: argparse.Namespace
    env: WorkflowEnvironment
    work: Path
    smtp_port: int
    inbox: Inbox
    server_pid: int | None

    @property
    def client(self) -> Client:
        return self.env.client

    @property
    def address(self) -> str:
        return self.env.client.service_client.config.target_host

    def server_cpu(self) -> float:
        return proc.cpu_seconds(self.server_pid) if self.server_pid else 0.0

    async def run(self, variant: str, round_: int, profile: Profile | None = None) -> Run:
        name = f"{variant}-r{round_}"
        task_queue = f"bench-{name}"
        inbox = None if variant == "floor" else self.inbox
        warm = [f"{PREFIX[variant]}-r{round_}-warm-{i:03d}" for i in range(self.args.warmup)]
        ids = [f"{PREFIX[variant]}-r{round_}-{i:05d}" for i in range(self.args.n)]
        async with worker_process(variant, self.address, task_queue, self.work, self.smtp_port, name) as worker:
            if warm:
                await run_lifecycles(self.client, task_queue, warm, inbox, self.args.concurrency)
            cpu0, server0 = proc.cpu_seconds(worker.pid), self.server_cpu()
            with profile.attached(worker.pid) if profile else contextlib.nullcontext():
                done = await run_lifecycles(self.client, task_queue, ids, inbox, self.args.concurrency)
            cpu1, server1 = proc.cpu_seconds(worker.pid), self.server_cpu()
            peak = proc.memory_mb(worker.pid, "VmHWM")
        self.inbox.forget()
        return Run(
            variant=variant,
            round=round_,
            n=len(ids),
            seconds=done.seconds,
            worker_cpu_s=cpu1 - cpu0,
            server_cpu_s=server1 - server0,
            peak_rss_mb=peak,
            accept_ms=done.accept_ms,
            events=await history_events(self.client, ids),
            worker_exit=worker.exit(),
        )

    async def with_subscriber(self, without: Run) -> dict[str, Any]:
        """partnerflow again, with one webhook taking every event (a receiver in this process):
        what publishing costs a lifecycle (beside `without`, the same round's run with none), and
        how many events a second one webhook delivers."""
        name, task_queue = "partnerflow-events", "bench-partnerflow-events"
        ids = [f"pe-{i:05d}" for i in range(self.args.n)]
        receiver = Receiver(free_port())
        await receiver.start()
        typed = Client(self.client.service_client, namespace=NAMESPACE, data_converter=data_converter)
        try:
            async with worker_process(
                "partnerflow", self.address, task_queue, self.work, self.smtp_port, name
            ) as worker:
                records = Records(f"sqlite:///{self.work / (name + '.db')}")
                try:
                    await Events(records, {Cloud.PUBLIC: typed}).subscribe(
                        Cloud.PUBLIC, PARTNER, receiver.url, task_queue=task_queue
                    )
                    cpu0 = proc.cpu_seconds(worker.pid)
                    done = await run_lifecycles(self.client, task_queue, ids, self.inbox, self.args.concurrency)
                    logged = records.last_event_seq()
                    deadline = time.monotonic() + 600
                    while len(receiver.unique()) < logged and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                    cpu1 = proc.cpu_seconds(worker.pid)
                finally:
                    records.dispose()
        finally:
            await receiver.stop()
            self.inbox.forget()
        arrived = receiver.arrivals
        with_cpu_ms = (cpu1 - cpu0) / len(ids) * 1000
        return {
            "lifecycles": len(ids),
            "events": logged,
            "events_delivered": len(receiver.unique()),
            "events_per_lifecycle": logged / len(ids),
            "lifecycles_per_s": len(ids) / done.seconds,
            "ratio_vs_without": (len(ids) / done.seconds) / without.lifecycles_per_s,
            "worker_cpu_ms_per_lifecycle": with_cpu_ms,
            "publish_cpu_ms_per_lifecycle": with_cpu_ms - without.worker_cpu_s / without.n * 1000,
            "events_delivered_per_s": logged / max(arrived[-1] - arrived[0], 1e-9) if len(arrived) > 1 else None,
            "accept_p99_ms": percentile(done.accept_ms, 99),
        }

    async def open_rss(self, variant: str = "partnerflow") -> dict[str, float]:
        """The variant's worker memory with `--open` relationships started by the driver, waiting in `invited`."""
        queue = f"bench-open-{variant}"
        async with worker_process(variant, self.address, queue, self.work, self.smtp_port, f"{variant}-open") as worker:
            idle = proc.memory_mb(worker.pid)
            ids = [f"open-{PREFIX[variant]}-{i:05d}" for i in range(self.args.open)]
            seconds = await start_many(self.client, queue, ids, self.args.concurrency)
            opened = await self.settled_open(worker, queue, idle)
        opened["starts_per_s"] = len(ids) / seconds
        opened["worker_gc_s"] = worker.exit().get("gc_s", float("nan"))
        return opened

    async def settled_open(self, worker: WorkerProcess, queue: str, idle_mb: float) -> dict[str, float]:
        await asyncio.sleep(2)  # the last tasks' buffers go
        count = await self.client.count_workflows(f"TaskQueue = '{queue}' AND ExecutionStatus = 'Running'")
        rss = proc.memory_mb(worker.pid)
        return {
            "relationships": count.count,
            "rss_mb": rss,
            "peak_rss_mb": proc.memory_mb(worker.pid, "VmHWM"),
            "idle_rss_mb": idle_mb,
            "kb_per_relationship": (rss - idle_mb) * 1024 / max(1, count.count),
        }

    async def import_and_open(self) -> tuple[dict[str, Any] | None, dict[str, float] | None]:
        """`partnerflow import` of `--import-rows` rows into a fresh partnerflow worker on the real task
        queue; then, topped up by the driver to `--open`, that worker's memory while they all wait in
        `invited` (an imported row's start answers once its relationship is invited)."""
        rows, queue = self.args.import_rows, "relationships"
        csv_file, report = self.work / "import.csv", self.work / "import-report.csv"
        lines = ["partner_id,partner_name,customer_id,company,admin_email,country"]
        lines += [f"p-import,Fabrikam,imp-{i:05d},Contoso {i},admin{i}@contoso.example,US" for i in range(rows)]
        csv_file.write_text("\n".join(lines) + "\n")
        imported: dict[str, Any] | None = None
        opened: dict[str, float] | None = None
        async with worker_process("partnerflow", self.address, queue, self.work, self.smtp_port, "import") as worker:
            idle = proc.memory_mb(worker.pid)
            if rows:
                imported = await _import_with_cli(self.address, csv_file, report, self.work)
                if imported is None:
                    imported = await _import_with_client(self.env, rows)
                print(f"import: {imported}", file=sys.stderr)
            if self.args.open:
                top_up = [f"open-{i:05d}" for i in range(max(0, self.args.open - rows))]
                if top_up:
                    await start_many(self.client, queue, top_up, self.args.concurrency)
                opened = await self.settled_open(worker, queue, idle)
        if opened is not None:
            opened["worker_gc_s"] = worker.exit().get("gc_s", float("nan"))
            print(f"open: {opened}", file=sys.stderr)
        self.inbox.forget()
        return imported, opened


async def _import_with_cli(
    address: str, csv_file: Path, report: Path, work: Path, concurrency: int = IMPORT_CONCURRENCY
) -> dict[str, Any] | None:
    """The real command line; None if it cannot be used."""
    cli = BIN / "partnerflow"
    command = [
        str(cli),
        f"--address={address}",
        "--json",
        "import",
        str(csv_file),
        "--user=sam@fabrikam.example",
        "--role=sales_agent",
        f"--concurrency={concurrency}",
        f"--report={report}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERFLOW_")}
    env["PARTNERFLOW_LOG__FORMAT"] = "json"
    env["PARTNERFLOW_ENCRYPTION__KEYS_FILE"] = ""  # plain, as the bench's workers are (no keyring)
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    wall = time.perf_counter() - began
    (work / "import.stderr").write_bytes(err)
    try:
        summary = json.loads(out)["summary"]
        rate = float(summary["rows_per_second"])
    except (ValueError, KeyError, TypeError):
        print(f"partnerflow import unusable (exit {process.returncode}): {err.decode()[-500:]}", file=sys.stderr)
        return None
    return {
        "method": f"partnerflow import --concurrency {concurrency} (the CLI, as a subprocess)",
        "rows": summary["rows"],
        "invited": summary.get("invited"),
        "failed": summary.get("failed"),
        "rows_per_s": rate,
        "wall_rows_per_s": summary["rows"] / wall,  # with the CLI's start-up
        "exit_code": process.returncode,
    }


async def _import_with_client(env: WorkflowEnvironment, rows: int) -> dict[str, Any]:
    """The fallback: `Relationships.start` per row, 16 in flight, which is what the importer does."""
    from bench.driver import SIGNER
    from partnerflow.client import Relationships
    from partnerflow.runtime.converter import data_converter
    from partnerflow.states.models import Cloud, StartRelationship

    client = Client(env.client.service_client, namespace=NAMESPACE, data_converter=data_converter)
    relationships = Relationships({Cloud.PUBLIC: client}, signer=SIGNER)
    gate = asyncio.Semaphore(IMPORT_CONCURRENCY)

    async def one(i: int) -> None:
        start = StartRelationship.model_validate(
            {
                "cloud": "public",
                "partner": {"id": "p-import", "name": "Fabrikam"},
                "customer": {"id": f"imp2-{i:05d}", "company": f"Contoso {i}", "admin_email": "a@contoso.example"},
                "origin": "invitation",
                "actor": {"user": "sam@fabrikam.example", "role": "sales_agent", "partner_id": "p-import"},
            }
        )
        async with gate:
            await relationships.start(start)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(rows)))
    seconds = time.perf_counter() - began
    return {
        "method": f"Relationships.start per row, {IMPORT_CONCURRENCY} in flight (the CLI was not usable)",
        "rows": rows,
        "rows_per_s": rows / seconds,
    }


# --- results -------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Each figure per round, then the median over rounds: a load spike from elsewhere on the
    machine that hits one run (it happens) moves one round's figure, not the result."""

    def median(values: Iterable[float]) -> float:
        return statistics.median(list(values))

    return {
        "lifecycles_per_s": median(r.lifecycles_per_s for r in runs),
        "accept_p50_ms": median(percentile(r.accept_ms, 50) for r in runs),
        "accept_p90_ms": median(percentile(r.accept_ms, 90) for r in runs),
        "accept_p99_ms": median(percentile(r.accept_ms, 99) for r in runs),
        "events_per_lifecycle": statistics.mean(e for r in runs for e in r.events),
        "cpu_s_per_lifecycle": median(r.worker_cpu_s / r.n for r in runs),
        "peak_rss_mb": max(r.peak_rss_mb for r in runs),
        "server_cpu_s_per_lifecycle": median(r.server_cpu_s / r.n for r in runs),
        "lifecycles": sum(r.n for r in runs),
        "by_round": {
            "lifecycles_per_s": [r.lifecycles_per_s for r in runs],
            "accept_p99_ms": [percentile(r.accept_ms, 99) for r in runs],
            "cpu_s_per_lifecycle": [r.worker_cpu_s / r.n for r in runs],
        },
    }


def paired_ratio(runs: list[Run], variant: str, versus: str) -> float:
    """The median over rounds of `variant`'s lifecycles per second over `versus`'s in the same round."""
    rate = {(r.variant, r.round): r.lifecycles_per_s for r in runs}
    rounds = sorted({r.round for r in runs})
    return statistics.median(rate[variant, i] / rate[versus, i] for i in rounds)


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pf, hw, tuned = results["partnerflow"], results["handwritten"], results["handwritten_tuned"]
    checks: dict[str, tuple[float, str, float]] = {
        "ratio_vs_handwritten >= 1.3": (results["ratio_vs_handwritten"], ">=", 1.3),
        "ratio_vs_tuned >= 1.0": (results["ratio_vs_tuned"], ">=", 1.0),
        "ratio_vs_floor >= 0.7": (results["ratio_vs_floor"], ">=", 0.7),
        "accept_p99_ms <= 0.8 x handwritten's": (pf["accept_p99_ms"], "<=", 0.8 * hw["accept_p99_ms"]),
        "accept_p99_ms <= tuned's": (pf["accept_p99_ms"], "<=", tuned["accept_p99_ms"]),
        "cpu_s_per_lifecycle <= tuned's": (pf["cpu_s_per_lifecycle"], "<=", tuned["cpu_s_per_lifecycle"]),
        "events_per_lifecycle <= tuned's": (pf["events_per_lifecycle"], "<=", tuned["events_per_lifecycle"]),
    }
    if results.get("rss_mb_10k_open") is not None:
        checks["rss_mb_10k_open <= 200"] = (results["rss_mb_10k_open"], "<=", 200.0)
    return {
        name: {"value": value, "limit": limit, "holds": value >= limit if op == ">=" else value <= limit}
        for name, (value, op, limit) in checks.items()
    }


def table(results: dict[str, Any]) -> str:
    columns = [
        ("lifecycles/s", "lifecycles_per_s", "{:.1f}"),
        ("accept p50 ms", "accept_p50_ms", "{:.1f}"),
        ("accept p99 ms", "accept_p99_ms", "{:.1f}"),
        ("events/lifecycle", "events_per_lifecycle", "{:.1f}"),
        ("worker CPU ms/lifecycle", "cpu_s_per_lifecycle", "{:.1f}"),
        ("peak worker RSS MB", "peak_rss_mb", "{:.0f}"),
        ("server CPU ms/lifecycle", "server_cpu_s_per_lifecycle", "{:.1f}"),
    ]
    lines = ["| variant | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for variant in VARIANTS:
        row = results[variant]
        cells = []
        for _, key, fmt in columns:
            value = row[key] * 1000 if key.endswith("cpu_s_per_lifecycle") else row[key]
            cells.append(fmt.format(value))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"ratio_vs_handwritten {results['ratio_vs_handwritten']:.3f}")
    lines.append(f"ratio_vs_tuned       {results['ratio_vs_tuned']:.3f}")
    lines.append(f"ratio_vs_floor       {results['ratio_vs_floor']:.3f}")
    if results.get("events_out"):
        e = results["events_out"]
        lines.append(
            f"events out           {e['events_per_lifecycle']:.0f} events/lifecycle, publishing"
            f" {e['publish_cpu_ms_per_lifecycle']:.1f} ms CPU/lifecycle, {e['ratio_vs_without']:.2f} of the rate"
            f" without, {e['events_delivered_per_s'] or 0:.0f} events/s delivered to one webhook"
        )
    if results.get("rss_mb_10k_open") is not None:
        lines.append(
            f"rss_mb_10k_open      {results['rss_mb_10k_open']:.0f} MB ({results['open']['relationships']} open)"
        )
    if results.get("import"):
        lines.append(f"import_rows_per_s    {results['import_rows_per_s']:.1f} ({results['import']['method']})")
    lines.append("")
    for name, check in results["targets"].items():
        lines.append(
            f"{'holds ' if check['holds'] else 'MISSED'}  {name}: {check['value']:.3f} (limit {check['limit']:.3f})"
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------
@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="partnerflow-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"logs and databases kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    load_before = proc.load_average()
    with workdir(args.keep) as work:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(BIN / "temporal"),
            namespace=NAMESPACE,
            dev_server_extra_args=["--namespace=relationships-usgov", *search_attributes.cli_flags()],
        )
        try:
            async with sink_process(work) as (smtp_port, maildir):
                inbox = Inbox(maildir)
                async with inbox.watching():
                    b = Bench(args, env, work, smtp_port, inbox, proc.child_named("temporal"))
                    if args.profile:
                        return await profile_only(b)
                    if args.memory:
                        return await memory_only(b)
                    runs: list[Run] = []
                    for round_ in range(1, args.rounds + 1):
                        for variant in VARIANTS:
                            run = await b.run(variant, round_)
                            runs.append(run)
                            print(
                                f"round {round_} {variant:17} {run.lifecycles_per_s:7.1f} lifecycles/s"
                                f"  worker {run.worker_cpu_s / run.n * 1000:5.1f} ms CPU/lifecycle"
                                f"  {statistics.mean(run.events):.0f} events  accept ms p50/90/99/max"
                                f" {'/'.join(f'{percentile(run.accept_ms, q):.0f}' for q in (50, 90, 99))}"
                                f"/{max(run.accept_ms):.0f}",
                                file=sys.stderr,
                            )
                    results: dict[str, Any] = {v: summarize([r for r in runs if r.variant == v]) for v in VARIANTS}
                    results["ratio_vs_handwritten"] = paired_ratio(runs, "partnerflow", "handwritten")
                    results["ratio_vs_tuned"] = paired_ratio(runs, "partnerflow", "handwritten_tuned")
                    results["ratio_vs_floor"] = paired_ratio(runs, "partnerflow", "floor")
                    last_pf = [r for r in runs if r.variant == "partnerflow"][-1]
                    results["events_out"] = await b.with_subscriber(last_pf)
                    imported, opened = await b.import_and_open()
                    results["rss_mb_10k_open"] = opened["rss_mb"] if opened else None
                    results["import_rows_per_s"] = imported["rows_per_s"] if imported else None
                    results["import"], results["open"] = imported, opened
        finally:
            await env.shutdown()
    results["targets"] = targets(results)
    modes = ("keep", "profile", "memory", "check", "output")
    results["params"] = {k: v for k, v in vars(args).items() if k not in modes}
    results["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": proc.load_average(),
        "python": sys.version.split()[0],
        "seconds": time.monotonic() - began,
    }
    results["runs"] = [{k: v for k, v in asdict(r).items() if k != "accept_ms"} for r in runs]
    return results


async def profile_only(b: Bench) -> dict[str, Any]:
    """One partnerflow run with py-spy sampling its worker; the top costs go to bench/profile.txt."""
    profile = Profile(b.work / "profile.raw")
    run = await b.run("partnerflow", 0, profile)
    text = profile.report(run_note=f"{run.n} lifecycles at {run.lifecycles_per_s:.1f}/s, py-spy --rate 250")
    PROFILE_REPORT.write_text(text)
    print(text)
    return {"profile": str(PROFILE_REPORT)}


async def memory_only(b: Bench) -> dict[str, Any]:
    """Each variant's worker memory per open relationship (`--open` of them): where the bytes go."""
    report = {variant: await b.open_rss(variant) for variant in VARIANTS}
    for variant, opened in report.items():
        print(f"{variant:12} {opened['kb_per_relationship']:6.1f} KB per open relationship  {opened}")
    return {"memory": report}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="lifecycles per variant and round (default 500)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the four variants (default 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="lifecycles in flight (default 64)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured lifecycles per run first (default 10)")
    parser.add_argument("--open", type=int, default=10_000, help="relationships left invited (default 10000; 0 skips)")
    parser.add_argument("--import-rows", type=int, default=10_000, help="rows to import (default 10000; 0 skips)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (default bench/results.json)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the worker logs and databases")
    parser.add_argument("--profile", action="store_true", help="only profile partnerflow's worker with py-spy")
    parser.add_argument("--memory", action="store_true", help="only each variant's memory per open relationship")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    results = asyncio.run(bench(args))
    if args.profile or args.memory:
        return 0
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n{args.output} written in {results['machine']['seconds']:.0f} s")
    if args.check and not all(t["holds"] for t in results["targets"].values()):
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    # The SDK's Rust threads can crash the interpreter's finalization after a long run
    # ("PyGILState_Release: thread state must be current"): everything is written, so leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
