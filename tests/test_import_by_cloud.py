"""Importing existing customers as partners' exports look: a `cloud` column, no partner columns.

The file has a byte-order mark, CRLF line ends, a duplicate, a bad address, a name with a
line break and an unknown cloud; each good row lands in its own cloud's namespace, for the
acting partner, on the real dev server with a worker per cloud.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from partnerflow import importer
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink
from partnerflow.states.models import Cloud
from partnerflow.states.names import TASK_QUEUE
from partnerflow.testing import Harness, register_partners, running, start_input
from tests.helpers import relationships_on

pytestmark = pytest.mark.server


@pytest.fixture
async def both_clouds(
    partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[dict[Cloud, Harness]]:
    """A worker per cloud on the contract's task queue, sharing one mail sink and one records database."""
    async with (
        running(partnerflow_dev_env, partnerflow_mail, partnerflow_records, Cloud.PUBLIC, TASK_QUEUE) as public,
        running(partnerflow_dev_env, partnerflow_mail, partnerflow_records, Cloud.USGOV, TASK_QUEUE) as usgov,
    ):
        yield {Cloud.PUBLIC: public, Cloud.USGOV: usgov}


def export_file(path: Path, prefix: str) -> None:
    lines = [
        "customer_id,company,admin_email,country,cloud",
        f"{prefix}-1,Contoso Ltd,admin@contoso.example,US,Public",
        f"{prefix}-2,Treasury Dept,it@treasury.example,US,US Government",
        f"{prefix}-3,Navy Yard,ops@navy.example,US,usgov",
        f"{prefix}-1,Contoso Ltd,admin@contoso.example,US,public",  # the same row again
        f'{prefix}-4,"Two\nLines Inc",admin@two.example,US,public',
        f"{prefix}-5,Bad Address,not-an-address,US,public",
        f"{prefix}-6,Elsewhere,admin@elsewhere.example,DE,Mars",
        f"{prefix}-7,Default Cloud,admin@default.example,GB,",
    ]
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())


async def test_each_row_lands_in_its_cloud_for_the_acting_partner(
    both_clouds: dict[Cloud, Harness], partnerflow_dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    partner = f"p-{uuid.uuid4().hex[:8]}"
    for cloud in Cloud:
        register_partners(both_clouds[cloud].records, start_input(partner={"id": partner}), cloud.value)
    path, prefix = tmp_path / "export.csv", f"c{uuid.uuid4().hex[:6]}"
    export_file(path, prefix)
    client = relationships_on(partnerflow_dev_env)

    result = await importer.import_rows(
        client,
        importer.read_file(path),
        cloud=Cloud.PUBLIC,
        user="sam@fabrikam.example",
        role="sales_agent",
        actor_partner_id=partner,
    )

    by_row = {r.row: r for r in result.results}
    assert [(by_row[n].status, by_row[n].cloud) for n in (1, 2, 3, 8)] == [
        ("invited", "public"),
        ("invited", "usgov"),
        ("invited", "usgov"),
        ("invited", "public"),  # an empty cell: the command line's cloud
    ]
    assert by_row[4].error == "cloud, partner_id, customer_id: duplicate of row 1"
    assert by_row[5].error.startswith("company: must not contain line breaks")
    assert by_row[6].error.startswith("admin_email: must be an email address")
    assert by_row[7].error.startswith("cloud: must be one of public, usgov")
    assert {r.partner_id for r in result.results if r.status == "invited"} == {partner}
    for n, cloud in ((1, Cloud.PUBLIC), (2, Cloud.USGOV), (3, Cloud.USGOV), (7, Cloud.PUBLIC)):  # customer ids
        wid = f"relationship/{partner}/{prefix}-{n}"
        described = await client.clients[cloud].get_workflow_handle(wid).describe()
        assert described.id == wid
        other = Cloud.USGOV if cloud is Cloud.PUBLIC else Cloud.PUBLIC
        assert (await client.clients[other].count_workflows(f"WorkflowId = '{wid}'")).count == 0  # not there
    records = both_clouds[Cloud.PUBLIC].records
    assert {r["customer_id"] for r in records.customer_list("usgov", partner)} == {f"{prefix}-2", f"{prefix}-3"}


def test_a_file_with_a_column_the_importer_does_not_know_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("customer_id,company,admin_email,region\nc-1,Contoso,a@contoso.example,EU\n")
    with pytest.raises(importer.ImportFileError, match="unknown columns: 'region'"):
        importer.read_file(path)


def test_a_row_for_a_cloud_this_connection_does_not_serve_fails_naming_it() -> None:
    row = importer.Row(1, {"customer_id": "c-1", "company": "X", "admin_email": "a@x.example", "cloud": "usgov"})
    assert importer.cloud_of(row, Cloud.PUBLIC) is Cloud.USGOV
    with pytest.raises(ValueError, match="cloud: must be one of"):
        importer.cloud_of(importer.Row(2, {"cloud": "moon"}), Cloud.PUBLIC)
