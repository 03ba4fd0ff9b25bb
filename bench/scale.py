"""`python -m bench.scale` (`make scale`): partnerflow holding 100,000 relationships on this machine.

A Temporal dev server on a SQLite file (not in memory: its bytes are measured), partnerflow's
records on a throwaway PostgreSQL, one partnerflow worker on the real task queue, and the
mail sink. `partnerflow import` (the command line) brings in `--relationships` customers in
chunks of `--chunk` rows, each chunk's rate kept (does it slow down as the server fills?).
With them all waiting in `invited`: the worker's memory, the bytes per relationship of the
Temporal database and of the records, the ops queries' latency (the CLI's `list` by partner
and state, and the saved searches, through visibility), and the accept latency of
`--lifecycles` whole lifecycles run meanwhile. Writes `bench/scale.json`; BENCHMARKS.md
reads it ("Running 1,000,000 relationships").

Quick trial: `python -m bench.scale --relationships 2000 --chunk 1000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench import proc
from bench.__main__ import (
    BIN,
    NAMESPACE,
    ROOT,
    _import_with_cli,
    percentile,
    sink_process,
    workdir,
    worker_process,
)
from bench.driver import IMPORT_PARTNER, Inbox, run_lifecycles
from partnerflow.cli import list_query
from partnerflow.ops import saved_queries
from partnerflow.pgcluster import ThrowawayPostgres
from partnerflow.runtime import search_attributes

RESULTS = ROOT / "bench" / "scale.json"
TASK_QUEUE = "relationships"
#: A write-ahead log, synced at checkpoints: how a single-file server is run for load
#: (the default rollback journal syncs every transaction, and the import waited on it).
DEV_SERVER_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def _csv(path: Path, first: int, rows: int) -> None:
    lines = ["partner_id,partner_name,customer_id,company,admin_email,country"]
    row = "{p},Fabrikam,sc-{i:07d},Contoso {i},admin{i}@contoso.example,US"
    lines += [row.format(p=IMPORT_PARTNER, i=i) for i in range(first, first + rows)]
    path.write_text("\n".join(lines) + "\n")


def _bytes_on_disk(path: Path) -> int:
    """The SQLite file with its write-ahead log and shared memory."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


async def _timed(client: Client, query: str, limit: int) -> float:
    began = time.perf_counter()
    async for _ in client.list_workflows(query, limit=limit):
        pass
    return (time.perf_counter() - began) * 1000


async def ops_queries(client: Client, times: int, limit: int) -> dict[str, Any]:
    """Each query `times` times, as the CLI asks it (its first `limit` rows); ms percentiles."""
    queries = {"list-partner-invited": list_query("invited", IMPORT_PARTNER, None)}
    queries |= {f"saved:{name}": q for name, q in saved_queries(datetime.now(UTC), IMPORT_PARTNER).items()}
    found: dict[str, Any] = {}
    every: list[float] = []
    for name, query in queries.items():
        took = [await _timed(client, query, limit) for _ in range(times)]
        every += took
        found[name] = {"p50_ms": percentile(took, 50), "p99_ms": percentile(took, 99), "query": query}
    found["all"] = {"p50_ms": percentile(every, 50), "p99_ms": percentile(every, 99)}
    return found


async def scale(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    with workdir(args.keep) as work, ThrowawayPostgres() as pg:
        temporal_db = work / "temporal.db"
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(BIN / "temporal"),
            namespace=NAMESPACE,
            dev_server_extra_args=[
                "--namespace=relationships-usgov",
                f"--db-filename={temporal_db}",
                *(f"--sqlite-pragma={pragma}" for pragma in args.sqlite_pragma),
                *search_attributes.cli_flags(),
            ],
        )
        try:
            address = env.client.service_client.config.target_host
            async with sink_process(work) as (smtp_port, maildir):
                inbox = Inbox(maildir)
                async with (
                    inbox.watching(),
                    worker_process("partnerflow", address, TASK_QUEUE, work, smtp_port, "scale", pg.url) as worker,
                ):
                    chunks: list[dict[str, Any]] = []
                    for first in range(0, args.relationships, args.chunk):
                        rows = min(args.chunk, args.relationships - first)
                        _csv(work / "chunk.csv", first, rows)
                        done = await _import_with_cli(
                            address, work / "chunk.csv", work / "report.csv", work, args.concurrency
                        )
                        if done is None or done.get("failed"):
                            raise RuntimeError(f"the import of rows {first}..{first + rows} failed: {done}")
                        inbox.forget()
                        chunks.append({"first_row": first, "rows": rows, "rows_per_s": done["rows_per_s"]})
                        print(f"imported {first + rows:>7}: {done['rows_per_s']:.1f} rows/s", file=sys.stderr)
                        # So far, should the run be stopped before its end: the import's trend.
                        args.output.write_text(json.dumps({"partial": True, "import_chunks": chunks}, indent=2))
                    await asyncio.sleep(2)  # the last tasks' buffers go
                    rss = proc.memory_mb(worker.pid)
                    counted = await env.client.count_workflows(
                        f"TaskQueue = '{TASK_QUEUE}' AND ExecutionStatus = 'Running'"
                    )
                    queries = await ops_queries(env.client, args.queries, args.limit)
                    ids = [f"sc-life-{i:05d}" for i in range(args.lifecycles)]
                    lives = await run_lifecycles(env.client, TASK_QUEUE, ids, inbox, args.lifecycle_concurrency)
            engine = sa.create_engine(pg.url)
            with engine.connect() as conn:
                records_bytes = int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one())
            engine.dispose()
            temporal_bytes = _bytes_on_disk(temporal_db)
        finally:
            await env.shutdown()
    n = counted.count
    seconds = sum(c["rows"] / c["rows_per_s"] for c in chunks)
    last = [c for c in chunks if c["first_row"] >= args.relationships - 10_000] or chunks[-1:]
    return {
        "open_relationships": n,
        "import_rows_per_s": args.relationships / seconds,
        "import_rows_per_s_last_10k": sum(c["rows"] for c in last) / sum(c["rows"] / c["rows_per_s"] for c in last),
        "worker_rss_mb": rss,
        "temporal_db_bytes_per_relationship": temporal_bytes / max(1, n),
        "records_bytes_per_relationship": records_bytes / max(1, n),
        "list_p99_ms": queries["all"]["p99_ms"],
        "accept_p99_ms_at_scale": percentile(lives.accept_ms, 99),
        "accept_p50_ms_at_scale": percentile(lives.accept_ms, 50),
        "import_chunks": chunks,
        "queries": queries,
        "bytes": {"temporal_db": temporal_bytes, "records": records_bytes},
        "params": {k: v for k, v in vars(args).items() if k not in ("keep", "output")},
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "seconds": time.monotonic() - began,
            "median_chunk_rows_per_s": statistics.median(c["rows_per_s"] for c in chunks),
        },
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--relationships", type=int, default=100_000, help="customers imported (default 100000)")
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per import run (default 10000)")
    parser.add_argument("--concurrency", type=int, default=32, help="the import's starts in flight (default 32)")
    parser.add_argument("--queries", type=int, default=20, help="times each ops query is asked (default 20)")
    parser.add_argument("--limit", type=int, default=1000, help="rows a listing reads (the CLI's default, 1000)")
    parser.add_argument("--lifecycles", type=int, default=200, help="whole lifecycles run at scale (default 200)")
    parser.add_argument("--lifecycle-concurrency", type=int, default=16, help="of those, in flight (default 16)")
    parser.add_argument(
        "--sqlite-pragma",
        action="append",
        default=None,
        help="the dev server's SQLite pragmas, PRAGMA=VALUE (default: journal_mode=wal, synchronous=normal)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (default bench/scale.json)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and logs")
    args = parser.parse_args(argv)
    if args.sqlite_pragma is None:
        args.sqlite_pragma = list(DEV_SERVER_PRAGMAS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    results = asyncio.run(scale(args))
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict | list)}, indent=2))
    print(f"\n{args.output} written in {results['machine']['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the SDK's Rust threads may crash a finalizing interpreter (sdk-python#300)
