"""Cloud isolation: public and usgov relationships never see or touch each other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.client import NotFound, Relationships
from partnerflow.mailsink import MailSink
from partnerflow.states.messages import Change, ReadFact
from partnerflow.states.models import Cloud, PartnerCommand
from partnerflow.testing import Harness, actor, client_for, running

pytestmark = pytest.mark.server


@pytest.fixture
async def partnerflow_live_usgov(
    partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[Harness]:
    """partnerflow's worker on the real dev server, cloud usgov."""
    async with running(partnerflow_dev_env, partnerflow_mail, partnerflow_records, Cloud.USGOV) as harness:
        yield harness


async def test_a_usgov_relationship_cannot_be_read_or_changed_from_public(
    partnerflow_live_usgov: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    handle = await partnerflow_live_usgov.bring_to("invited", cloud="usgov")
    partner_id, customer_id = handle.id.split("/")[1:]
    public_only = Relationships({Cloud.PUBLIC: client_for(partnerflow_dev_env, Cloud.PUBLIC)})
    with pytest.raises(NotFound):
        await public_only.state(Cloud.PUBLIC, partner_id, customer_id)
    with pytest.raises(NotFound):
        await public_only.update(
            Cloud.PUBLIC, handle.id, "cancel_invitation", PartnerCommand.model_validate({"actor": actor()})
        )
    listed = [
        w.id async for w in client_for(partnerflow_dev_env, Cloud.PUBLIC).list_workflows(f"WorkflowId = '{handle.id}'")
    ]
    assert listed == []
    assert (await partnerflow_live_usgov.view(handle)).state == "invited"
    assert partnerflow_live_usgov.records.customer("public", partner_id, customer_id) is None
    assert partnerflow_live_usgov.records.customer("usgov", partner_id, customer_id) is not None


async def test_a_worker_of_one_cloud_refuses_the_other_clouds_rows(partnerflow_records: Records) -> None:
    acts = Capabilities(partnerflow_records, Mailer(SmtpSettings()), "http://portal.test", "usgov")
    change = Change(
        change_id="relationship/p-1/c-1/run/1",
        cloud="public",
        partner_id="p-1",
        customer_id="c-1",
        workflow_id="relationship/p-1/c-1",
        company="Contoso",
        operation="CreateCustomerInvitation",
        actor_user="sam@p.example",
        actor_role="sales_agent",
        from_state=None,
        to_state="invited",
        fields={"purchase_permission": False, "reinstated_count": 0},
        at=datetime.now(UTC),
    )
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(acts.record_change, change)
    assert caught.value.type == "CloudIsolation" and caught.value.non_retryable
    with pytest.raises(ApplicationError):
        key = ReadFact(fact="active_subscriptions", cloud="public", partner_id="p-1", customer_id="c-1")
        await ActivityEnvironment().run(acts.read_fact, key)
    assert partnerflow_records.audit_trail("relationship/p-1/c-1") == []
