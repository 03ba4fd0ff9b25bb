"""Two imports of one file at the same time: each row is invited by exactly one of them."""

from __future__ import annotations

import asyncio
import csv
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from partnerflow import importer
from partnerflow.client import Relationships
from partnerflow.states.models import Cloud, StartRelationship
from partnerflow.testing import Harness, register_partners, start_input
from tests.helpers import relationships_on

pytestmark = pytest.mark.server

ROWS = 6


def write_file(path: Path, partner: str) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("partner_id", "customer_id", "company", "admin_email", "country"))
        for n in range(1, ROWS + 1):
            writer.writerow([partner, f"c{n:03d}", f"Customer {n} Ltd", f"admin@c{n:03d}.example", "US"])


async def test_two_imports_of_one_file_at_once_invite_each_row_once(
    partnerflow_live_contract_queue: Harness,
    partnerflow_dev_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Both imports find no open relationship in their quick check, then both start it: the one
    whose start created the workflow reports `invited`, the other `already`, and one email goes."""
    path = tmp_path / "customers.csv"
    partner = f"p-{uuid.uuid4().hex[:10]}"
    write_file(path, partner)
    register_partners(partnerflow_live_contract_queue.records, start_input(partner={"id": partner}))
    client = relationships_on(partnerflow_dev_env)

    # The race made certain: each import's check (a real describe) answers before either
    # import starts that row, as when both run the check in the same instant.
    checked = importer._open_state
    both: defaultdict[str, asyncio.Barrier] = defaultdict(lambda: asyncio.Barrier(2))
    seen: list[str | None] = []

    async def check_then_wait_for_the_other(client: Relationships, start: StartRelationship) -> str | None:
        state = await checked(client, start)
        seen.append(state)
        await both[start.workflow_id].wait()
        return state

    monkeypatch.setattr(importer, "_open_state", check_then_wait_for_the_other)

    async def run_import() -> importer.ImportResult:
        rows = importer.read_file(path)
        return await importer.import_rows(
            client, rows, cloud=Cloud.PUBLIC, user="sam@fabrikam.example", role="sales_agent", concurrency=ROWS
        )

    first, second = await asyncio.gather(run_import(), run_import())

    assert seen == [None] * (2 * ROWS)  # neither check saw an open relationship
    for one, other in zip(first.results, second.results, strict=True):
        assert one.row == other.row and one.state == other.state == "invited", (one, other)
        assert sorted([one.status, other.status]) == [importer.ALREADY, importer.INVITED], (one, other)
    assert first.count(importer.INVITED) + second.count(importer.INVITED) == ROWS
    await partnerflow_live_contract_queue.letters_sent()
    assert len(partnerflow_live_contract_queue.mail()) == ROWS
