"""Bulk invitations from a CSV file: validate every row, start them with bounded concurrency.

Each valid row becomes a `StartRelationship` (origin `invitation`) and goes through
`Relationships.start_reporting`, which is idempotent (update-with-start; an open run is
reused) and tells whether its start created the run: running the same file twice, or
twice at once, invites nobody twice. A relationship already open is recognised
first by a describe (Temporal alone, no worker), so a rerun is quick. Every row ends up in the report as
`invited` (this run's start created the relationship), `already` (it was open before, or
another start created it: of two imports of one file at once, one says `invited` and the
other `already`) or `failed` (with the field and rule, or the server's refusal).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from pydantic import ValidationError
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from partnerflow.client import RelationshipError, Relationships, Unavailable
from partnerflow.states.errors import problems as field_problems
from partnerflow.states.inert import csv_cell, terminal
from partnerflow.states.models import STRICT, Cloud, Origin, StartRelationship
from partnerflow.states.relationship import RELATIONSHIP

REQUIRED_COLUMNS: Final = ("customer_id", "company", "admin_email")
#: `partner_id`: the acting partner's by default; `cloud`: the command line's by default;
#: `country`: US by default. The partner_* columns are read and checked as before, but a
#: start's partner facts are the partner registry's.
OPTIONAL_COLUMNS: Final = ("partner_id", "country", "cloud", "partner_name", "partner_kind", "indirect_provider_id")
#: `partnerflow export`'s own columns: a file it wrote imports as it is, these read as facts
#: of the records that wrote them, not as input (an open relationship is reported `already`).
EXPORT_ONLY_COLUMNS: Final = (
    "workflow_id",
    "state",
    "purchase_permission",
    "reinstated_count",
    "suspension_reason",
    "created_at",
    "updated_at",
)
KNOWN_COLUMNS: Final = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, *EXPORT_ONLY_COLUMNS)
REPORT_COLUMNS: Final = ("row", "cloud", "partner_id", "customer_id", "status", "state", "error")

#: The `cloud` column's words for each cloud (case, spaces, `-` and `_` aside), as partners'
#: exports write them.
CLOUD_NAMES: Final[Mapping[str, Cloud]] = {
    "public": Cloud.PUBLIC,
    "commercial": Cloud.PUBLIC,
    "global": Cloud.PUBLIC,
    "usgov": Cloud.USGOV,
    "usgovernment": Cloud.USGOV,
}

#: Starts in flight by default: `make bench` measured 37 rows/s at 16 on a 2-core machine,
#: against 10.6 rows/s at 8 once each start waits for its worker's admission and email.
CONCURRENCY: Final = 16

INVITED: Final = "invited"
ALREADY: Final = "already"
FAILED: Final = "failed"

#: Where a model field comes from in the CSV (or, for the actor, on the command line).
FIELD_SOURCES: Final[Mapping[str, str]] = {
    "partner.id": "partner_id",
    "partner.name": "partner_name",
    "partner.kind": "partner_kind",
    "partner.indirect_provider_id": "indirect_provider_id",
    "partner": "partner_kind",
    "customer.id": "customer_id",
    "customer.company": "company",
    "customer.admin_email": "admin_email",
    "customer.country": "country",
    "cloud": "cloud",
    "actor.user": "--user",
    "actor.role": "--role",
    "actor.partner_id": "--partner-id",
}

STATE_KEY: Final = SearchAttributeKey.for_keyword(RELATIONSHIP.state_attribute)

#: Tries per row when Temporal is briefly unavailable (a start is idempotent: safe to repeat).
ATTEMPTS: Final = 3


class ImportFileError(ValueError):
    """The file cannot be imported at all (not CSV, or columns missing): nothing was started."""


def problems(error: ValidationError, sources: Mapping[str, str] = FIELD_SOURCES) -> list[tuple[str, str]]:
    """(field, rule) for each problem of `error`, naming fields as the user wrote them."""
    return [(sources.get(p["field"], p["field"]), p["rule"]) for p in field_problems(error)]


def describe(error: ValidationError, sources: Mapping[str, str] = FIELD_SOURCES) -> str:
    return "; ".join(f"{where}: {rule}" for where, rule in problems(error, sources))


@dataclass(frozen=True)
class Row:
    """One data row of the file; `number` counts data rows from 1 (the header is not one)."""

    number: int
    values: dict[str, str]
    extra_cells: bool = False  # more cells than the header has columns

    @property
    def partner_id(self) -> str:
        return self.values.get("partner_id", "")

    @property
    def cloud(self) -> str:
        return self.values.get("cloud", "")

    @property
    def customer_id(self) -> str:
        return self.values.get("customer_id", "")


@dataclass(frozen=True)
class RowResult:
    row: int
    cloud: str
    partner_id: str
    customer_id: str
    status: str
    state: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, str | int]:
        return {name: getattr(self, name) for name in REPORT_COLUMNS}


@dataclass
class ImportResult:
    results: list[RowResult]
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> int:
        return self.count(FAILED)

    def summary(self) -> dict[str, Any]:
        total = len(self.results)
        return {
            "rows": total,
            INVITED: self.count(INVITED),
            ALREADY: self.count(ALREADY),
            FAILED: self.failed,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(total / self.seconds, 1) if self.seconds > 0 else None,
        }


def read_rows(stream: IO[str]) -> list[Row]:
    """Every non-blank data row, cells stripped. The header must name the required columns and
    no column this importer does not know: a column ignored would be a fact silently dropped
    (a file's `cloud` once was, and US Government customers were invited in the public cloud)."""
    reader = csv.reader(stream)
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ImportFileError(
            f"the header must name the columns {', '.join(REQUIRED_COLUMNS)}; missing: {', '.join(missing)}"
        )
    unknown = [repr(terminal(name)) for name in header if name and name not in KNOWN_COLUMNS]
    if unknown:
        raise ImportFileError(
            f"unknown columns: {', '.join(unknown)} (known: {', '.join((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))},"
            " and the columns `partnerflow export` writes)"
        )
    repeated = sorted({repr(terminal(name)) for name in header if name and header.count(name) > 1})
    if repeated:
        raise ImportFileError(f"columns named twice: {', '.join(repeated)}")
    rows = []
    for number, cells in enumerate(reader, start=1):
        cells = [cell.strip() for cell in cells]
        if not any(cells):
            continue  # a blank line
        values = {name: cell for name, cell in zip(header, cells, strict=False) if name}
        rows.append(Row(number, values, extra_cells=len(cells) > len(header)))
    return rows


def clouds_named(rows: Iterable[Row], default: Cloud) -> set[Cloud]:
    """Every cloud the rows go to (an unknown name fails its own row, naming the rule)."""
    named = {default}
    for row in rows:
        with contextlib.suppress(ValueError):
            named.add(cloud_of(row, default))
    return named


def cloud_of(row: Row, default: Cloud) -> Cloud:
    """The row's `cloud` (the command line's where the cell is empty); unknown words are refused."""
    if not row.cloud:
        return default
    found = CLOUD_NAMES.get(row.cloud.lower().replace(" ", "").replace("-", "").replace("_", ""))
    if found is None:
        raise ValueError(f"cloud: must be one of {', '.join(c.value for c in Cloud)} (or {', '.join(CLOUD_NAMES)})")
    return found


def to_start(
    row: Row, cloud: Cloud, user: str | None, role: str | None, actor_partner_id: str | None = None
) -> StartRelationship:
    """The start input for `row`: its partner is the row's, else the acting user's partner; the
    actor's partner is the one given, else the row's."""
    v = row.values
    partner: dict[str, str] = {"id": v.get("partner_id") or actor_partner_id or ""}
    if v.get("partner_name"):
        partner["name"] = v["partner_name"]
    if v.get("partner_kind"):
        partner["kind"] = v["partner_kind"]
    if v.get("indirect_provider_id"):
        partner["indirect_provider_id"] = v["indirect_provider_id"]
    customer: dict[str, str] = {
        "id": v.get("customer_id", ""),
        "company": v.get("company", ""),
        "admin_email": v.get("admin_email", ""),
    }
    if v.get("country"):
        customer["country"] = v["country"]
    actor = {"user": user, "role": role, "partner_id": actor_partner_id or partner["id"]}
    return StartRelationship.model_validate(
        {
            "cloud": cloud,
            "partner": partner,
            "customer": customer,
            "origin": Origin.INVITATION,
            "actor": {k: value for k, value in actor.items() if value is not None},
        },
        context=STRICT,
    )


@dataclass
class Progress:
    """A one-line progress bar on a terminal, redrawn at most every `interval` seconds."""

    total: int
    stream: IO[str] | None  # None: no bar (not a terminal)
    width: int = 30
    interval: float = 0.1
    done: int = 0
    ok: int = 0
    failed: int = 0
    _drawn: float = field(default=0.0, repr=False)

    def advance(self, status: str) -> None:
        self.done += 1
        if status == FAILED:
            self.failed += 1
        else:
            self.ok += 1
        now = time.monotonic()
        if self.stream is not None and (now - self._drawn >= self.interval or self.done == self.total):
            self._drawn = now
            self.draw()

    def draw(self) -> None:
        if self.stream is None:
            return
        filled = self.width * self.done // self.total if self.total else self.width
        bar = "#" * filled + " " * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} ok={self.ok} failed={self.failed}")
        self.stream.flush()

    def finish(self) -> None:
        if self.stream is not None:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


def _transient(error: RelationshipError) -> bool:
    """Temporal down for a moment, or asking callers to slow down: worth another try."""
    cause = error.__cause__
    busy = isinstance(cause, RPCError) and cause.status is RPCStatusCode.RESOURCE_EXHAUSTED
    return isinstance(error, Unavailable) or busy


async def _open_state(client: Relationships, start: StartRelationship) -> str | None:
    """The state of the open relationship with this id, asked of Temporal alone; None if none is open.

    A describe needs no worker (an update on a workflow evicted from the worker's
    cache replays its history), so a rerun of a big file is quick. Any doubt (not
    found, closed, no state published yet, no answer) leaves it to the start.
    """
    handle = client.clients[start.cloud].get_workflow_handle(start.workflow_id)
    try:
        described = await handle.describe(rpc_timeout=client.rpc_timeout)
    except (RPCError, RuntimeError):
        return None
    if described.status is not WorkflowExecutionStatus.RUNNING:
        return None
    return described.typed_search_attributes.get(STATE_KEY)


async def _start_one(client: Relationships, start: StartRelationship) -> tuple[str, str]:
    """(status, state) of one start; raises the RelationshipError that refused it."""
    state = await _open_state(client, start)
    if state is not None:
        return ALREADY, state
    for attempt in range(1, ATTEMPTS + 1):
        try:
            view, created = await client.start_reporting(start)
            break
        except RelationshipError as error:
            if attempt == ATTEMPTS or not _transient(error):
                raise
            await asyncio.sleep(0.5 * attempt)
    # Whether this start created the run, as the server decided it: times cannot tell, since
    # another import's start may create the run after this import began.
    return (INVITED if created else ALREADY), view.state.value


async def import_rows(
    client: Relationships,
    rows: Iterable[Row],
    *,
    cloud: Cloud,
    user: str | None,
    role: str | None,
    actor_partner_id: str | None = None,
    concurrency: int = CONCURRENCY,
    timeout: float | None = 120,
    progress: Callable[[int], Progress] | None = None,
) -> ImportResult:
    """Validate every row, then start the valid ones, at most `concurrency` at a time. `cloud`:
    where a row that names none goes; each row is started in its own cloud's namespace.

    A row still unanswered after `timeout` seconds fails (a workflow task failing, a
    stuck worker): its start may still complete, and running the file again tells.
    """
    rows = list(rows)
    clock = time.monotonic()
    bar = progress(len(rows)) if progress else None
    results: dict[int, RowResult] = {}
    starts: list[tuple[Row, StartRelationship]] = []
    seen: dict[tuple[Cloud, str, str], int] = {}

    def done(result: RowResult) -> None:
        results[result.row] = result
        if bar:
            bar.advance(result.status)

    for row in rows:

        def failed(error_text: str, cloud: str = "", row: Row = row) -> RowResult:
            return RowResult(row.number, cloud or row.cloud, row.partner_id, row.customer_id, FAILED, error=error_text)

        if row.extra_cells:
            done(failed("row: more cells than the header has columns"))
            continue
        try:
            row_cloud = cloud_of(row, cloud)
        except ValueError as error:
            done(failed(str(error)))
            continue
        if row_cloud not in client.clients:
            served = ", ".join(c.value for c in client.clients)
            done(failed(f"cloud: {row_cloud.value} is not served by this connection ({served})", row_cloud.value))
            continue
        try:
            start = to_start(row, row_cloud, user, role, actor_partner_id)
        except ValidationError as error:
            done(failed(describe(error), row_cloud.value))
            continue
        key = (start.cloud, start.partner.id, start.customer.id)
        if key in seen:
            done(failed(f"cloud, partner_id, customer_id: duplicate of row {seen[key]}", row_cloud.value))
            continue
        seen[key] = row.number
        starts.append((row, start))

    gate = asyncio.Semaphore(max(1, concurrency))

    async def run(row: Row, start: StartRelationship) -> None:
        async with gate:
            ids = (row.number, start.cloud.value, start.partner.id, start.customer.id)
            try:
                status, state = await asyncio.wait_for(_start_one(client, start), timeout)
                result = RowResult(*ids, status, state)
            except TimeoutError:
                message = f"Timeout: no answer in {timeout:g} s (the start may still complete: run the import again)"
                result = RowResult(*ids, FAILED, error=message)
            except RelationshipError as error:
                message = f"{error.type}: {error.message}" + (f" (rule: {error.rule})" if error.rule else "")
                result = RowResult(*ids, FAILED, error=message)
        done(result)

    await asyncio.gather(*(run(row, start) for row, start in starts))
    if bar:
        bar.finish()
    return ImportResult([results[n] for n in sorted(results)], time.monotonic() - clock)


def write_report(stream: IO[str], results: Iterable[RowResult]) -> None:
    writer = csv.DictWriter(stream, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        # Cells as typed in the file go back out: inert in a spreadsheet and on a terminal.
        writer.writerow({name: csv_cell(_plain(value)) for name, value in result.as_dict().items()})


def _plain(value: str | int) -> str | int:
    return terminal(value) if isinstance(value, str) else value


def write_report_file(path: Path, results: Iterable[RowResult]) -> None:
    with path.open("w", newline="", encoding="utf-8") as stream:
        write_report(stream, results)


def read_file(path: Path) -> list[Row]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            return read_rows(stream)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ImportFileError(f"{path}: {error}") from None
