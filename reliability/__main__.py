"""`python -m reliability` (`make chaos`): a chaos run, its figures in reliability/results.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reliability.chaos import Chaos, Plan
from reliability.verify import verify

RESULTS = Path(__file__).with_name("results.json")
#: The figures that must be zero (or, for expected_state_ok, equal to relationships).
MUST_BE_ZERO = (
    "duplicate_emails",
    "missing_emails",
    "audit_mismatches",
    "records_mismatches",
    "failed_workflows",
    "events_lost",
    "events_out_of_order",
    "events_badly_signed",
)


async def run(plan: Plan, work: Path) -> dict[str, Any]:
    """The figures; a run that breaks down says so as a finding (`crashed`), with the tally so
    far, instead of ending without any."""
    chaos = Chaos(plan, work)
    try:
        async with chaos.running():
            await chaos.drive()
            results = await verify(chaos)
    except Exception as error:  # every figure the run had, and where it broke
        (work / "crash.txt").write_text("".join(traceback.format_exception(error)))
        results = {"crashed": f"{type(error).__name__}: {error}", "tally": asdict(chaos.tally)}
    results["plan"] = {k: v for k, v in vars(plan).items()}
    return results


def holds(results: dict[str, Any]) -> bool:
    if "crashed" in results:
        return False
    return results["expected_state_ok"] == results["relationships"] and not any(results[k] for k in MUST_BE_ZERO)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    d = Plan()
    p = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    p.add_argument("--relationships", type=int, default=d.relationships)
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--kill-every", type=float, nargs=2, default=d.kill_every_s, metavar=("MIN_S", "MAX_S"))
    p.add_argument("--smtp-down", type=float, default=d.smtp_down_s, help="seconds the SMTP server is down")
    p.add_argument("--db-down", type=float, default=d.db_down_s, help="seconds the records database is down")
    p.add_argument(
        "--receiver-down", type=float, default=d.receiver_down_s, help="seconds the webhook receiver is down"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, mail, databases)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    plan = Plan(
        relationships=args.relationships,
        concurrency=args.concurrency,
        kill_every_s=tuple(args.kill_every),
        smtp_down_s=args.smtp_down,
        db_down_s=args.db_down,
        receiver_down_s=args.receiver_down,
        seed=args.seed,
    )
    work = Path(tempfile.mkdtemp(prefix="partnerflow-chaos-"))
    results = asyncio.run(run(plan, work))
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k not in ("detail", "plan", "tally")}, indent=2))
    ok = holds(results)
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    # What a diagnosis needs: the figures (seed and plan in them), and beside them the worker's,
    # the page's and the server's logs, the mail and the crash's traceback, if any.
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'kept' if ok else 'FAILED: kept for diagnosis'}: {work}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
