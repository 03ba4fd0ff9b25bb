"""Any number of worker processes share the task queue; one killed mid-run loses nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.records import Records
from partnerflow.client import Relationships
from partnerflow.mailsink import MailSink, text_of
from partnerflow.states.models import AcceptInvitation, Cloud, CustomerAdmin, StartRelationship
from partnerflow.testing import client_for, letters_sent, poll, start_input
from tests.helpers import Deployment

pytestmark = pytest.mark.server
RELATIONSHIPS = 40


async def test_a_worker_killed_mid_run_leaves_every_relationship_complete(
    partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, tmp_path: Path
) -> None:
    address = partnerflow_dev_env.client.service_client.config.target_host
    workers = [Deployment(address, partnerflow_mail, tmp_path, name=f"worker-{i}") for i in (1, 2)]
    for w in workers:
        w.start()
    try:
        for w in workers:

            async def started(w: Deployment = w) -> bool:
                return w.log().count('"worker.started"') == 2

            await poll(started, attempts=400)
        workers[0].register("p-many")
        client = Relationships(
            {cloud: client_for(partnerflow_dev_env, cloud) for cloud in Cloud}, signer=workers[0].signer
        )
        starts = [
            StartRelationship.model_validate(start_input(partner={"id": "p-many"}, actor={"partner_id": "p-many"}))
            for _ in range(RELATIONSHIPS)
        ]
        await asyncio.gather(*(client.start(s) for s in starts))
        tokens = {m["To"] + m["Message-ID"]: m for m in partnerflow_mail.messages()}
        assert len(tokens) == RELATIONSHIPS

        def token_for(start: StartRelationship) -> str:
            for message in partnerflow_mail.messages():
                if start.workflow_id.replace("/", "%2F") in text_of(message):
                    return str(text_of(message).split("token=")[1].split()[0])
            raise AssertionError("no invitation")

        admin = CustomerAdmin(user="Alex", email="admin@contoso.example")
        accepts = [
            asyncio.create_task(
                client.accept_invitation(
                    Cloud.PUBLIC,
                    s.workflow_id,
                    AcceptInvitation(token=token_for(s), customer_admin=admin, accept_agreement=True),
                )
            )
            for s in starts
        ]

        async def some_done() -> bool:
            return sum(t.done() for t in accepts) >= 5

        await poll(some_done, attempts=400)
        assert workers[0].process is not None
        workers[0].process.send_signal(signal.SIGKILL)  # no goodbye: tasks in flight are abandoned
        views = await asyncio.gather(*accepts)
        assert {v.state for v in views} == {"active"}

        records = Records(workers[1].records_url)
        for s in starts:
            trail = records.audit_trail(s.workflow_id)
            assert [r["operation"] for r in trail] == ["CreateCustomerInvitation", "AddCustomer"], s.workflow_id
            row = records.customer("public", "p-many", s.customer.id)
            assert row and (row["state"], row["version"]) == ("active", 2)
        # The notices go with the changes, sent by the workers' relays; one the killed worker had
        # claimed goes once its claim runs out, by the other. Each is delivered; one whose worker
        # died inside the SMTP conversation may have gone twice, always under the same
        # Message-ID (so receivers fold them into one).
        await letters_sent(records)
        records.dispose()
        notices = [m for m in partnerflow_mail.messages() if "accepted your" in m["Subject"]]
        assert len({m["Message-ID"] for m in notices}) == RELATIONSHIPS
        assert len({m["Message-ID"] for m in partnerflow_mail.messages() if "invites" in m["Subject"]}) == RELATIONSHIPS
        assert workers[1].stop() == 0
    finally:
        for w in workers:
            if w.process and w.process.poll() is None:
                w.process.kill()
