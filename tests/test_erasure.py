"""Erasing one customer's personal data: the histories, the records' names and addresses, the
sink's emails; what happened, when and in which role stays. Refused while the relationship lives.

On the real dev server (the time-skipping one cannot delete a workflow), through the CLI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.records import ERASED
from partnerflow.cli import main
from partnerflow.testing import ADMIN, Harness, actor, poll

pytestmark = pytest.mark.server


async def erase(env: WorkflowEnvironment, h: Harness, wid: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    _, partner, customer = wid.split("/")
    address = env.client.service_client.config.target_host
    args = ["--address", address, "erase", partner, customer, "--yes"]
    code = await asyncio.to_thread(main, args)
    return code, capsys.readouterr().err


@pytest.fixture
def configured(partnerflow_live_contract_queue: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    h = partnerflow_live_contract_queue
    monkeypatch.setenv("PARTNERFLOW_RECORDS__URL", h.records.url)
    monkeypatch.setenv("PARTNERFLOW_MAIL_SINK__MAILDIR", str(h.sink.maildir))
    return h


async def test_an_ended_relationship_is_erased_and_only_its_facts_stay(
    configured: Harness, partnerflow_dev_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    h = configured
    handle = await h.start(customer={"company": "Erasable GmbH", "admin_email": "dpo@erasable.example"})
    await h.wait_for_state(handle, "invited")
    await h.update(handle, "accept_invitation", {"token": h.token(), "customer_admin": ADMIN, "accept_agreement": True})
    await h.update(handle, "end_relationship", {"actor": actor(), "reason": "Erasable asked to leave"})
    other = await h.start()  # another customer's: untouched
    await h.wait_for_state(other, "invited")
    mails_before = len(h.mail())
    ours = [m for m in h.mail() if "Erasable" in str(m["Subject"])]
    assert ours, "the relationship's emails are in the sink"

    code, err = await erase(partnerflow_dev_env, h, handle.id, capsys)
    assert code == 0, err
    again, err = await erase(partnerflow_dev_env, h, handle.id, capsys)  # safe to run again
    assert again == 0, err

    async def deleted() -> bool:  # the server deletes in the background (about 30 s on the dev server)
        try:
            await handle.fetch_history()
        except RPCError as error:
            return error.status is RPCStatusCode.NOT_FOUND
        return False

    assert await poll(deleted, attempts=400), "the workflow history is deleted"
    customer_id = handle.id.split("/")[-1]
    row: Any = h.records.customer("public", "p-100", customer_id)
    assert (row["company"], row["admin_email"], row["state"]) == (ERASED, None, "ended")
    trail = h.records.audit_trail(handle.id)
    assert [r["operation"] for r in trail] == [
        "CreateCustomerInvitation",
        "AddCustomer",
        "RemovePartnerCustomerRelationship",
        "EraseCustomerData",
    ]
    assert all(r["actor_user"] in (ERASED, "operator") and r["reason"] == "" for r in trail)
    assert [r["actor_role"] for r in trail[:3]] == ["sales_agent", "customer_admin", "sales_agent"]
    text = h.records.engine.connect().exec_driver_sql("select * from outbox").fetchall()
    assert not [r for r in text if "erasable" in str(r).lower()], "no address or name left in the outbox"
    events = [e for e in h.records.events_after("public", "p-100", 0, 1000) if e["subject"] == handle.id]
    assert [e["type"] for e in events][-1] == "reseller-relationship-ended", "what happened stays in the event log"
    assert "erasable" not in str(events).lower() and {e["data"]["actor"]["user"] for e in events} == {ERASED}
    assert len(h.mail()) == mails_before - len(ours)
    assert not [m for m in h.mail() if "Erasable" in str(m["Subject"]) or "erasable" in str(m["To"])]
    assert (await other.describe()).id == other.id  # the other relationship lives on


async def test_a_live_relationship_is_not_erased(
    configured: Harness, partnerflow_dev_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    h = configured
    handle = await h.start()
    await h.wait_for_state(handle, "invited")
    await h.update(handle, "accept_invitation", {"token": h.token(), "customer_admin": ADMIN, "accept_agreement": True})
    code, err = await erase(partnerflow_dev_env, h, handle.id, capsys)
    assert code == 4 and "is active: end it first (nothing was erased)" in err
    row: Any = h.records.customer("public", "p-100", handle.id.split("/")[-1])
    assert row["company"] == "Contoso Ltd" and row["admin_email"] == ADMIN["email"]
    assert (await h.view(handle)).state == "active"
    address = partnerflow_dev_env.client.service_client.config.target_host
    elsewhere = ["--address", address, "--cloud", "usgov", "erase", "p-100", handle.id.split("/")[-1], "--yes"]
    assert await asyncio.to_thread(main, elsewhere) == 5  # not in that cloud: found nowhere, nothing erased
    assert "no relationship" in capsys.readouterr().err and (await h.view(handle)).state == "active"
    without_yes = await asyncio.to_thread(main, ["erase", "p-100", "c-1"])
    assert without_yes == 2 and "cannot be undone: add --yes" in capsys.readouterr().err


def test_the_sink_path_is_where_make_run_keeps_mail(tmp_path: Path) -> None:
    from partnerflow.erasure import _forget_mail

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "1").write_bytes(b"Message-ID: <a@partnerflow>\r\nSubject: x\r\n\r\nbody")
    (tmp_path / "new" / "2").write_bytes(b"Message-ID: <b@partnerflow>\r\nSubject: y\r\n\r\nbody")
    assert _forget_mail(tmp_path, {"<a@partnerflow>"}) == 1
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["2"]
