"""End to end: the real worker process, the real dev server, raw JSON from the `temporal` CLI.

The README's walk-through is run as written, so it never rots.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink
from partnerflow.states.models import Actor
from partnerflow.testing import BIN, poll
from tests.helpers import Deployment, payload_data

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent


def walk_through(name: str = "walk-through") -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(rf"```bash\n(# {name}\n.*?)```", readme, re.S)
    assert len(blocks) == 1, f"README.md must have exactly one {name} block"
    return str(blocks[0])


@pytest.fixture
async def deployment(partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, tmp_path: Path) -> Any:
    address = partnerflow_dev_env.client.service_client.config.target_host
    d = Deployment(address, partnerflow_mail, tmp_path, sealed=True)  # as make run: sealed, with a codec server
    d.start()
    try:
        await poll(d.codec_up, attempts=400)

        async def started() -> bool:
            return d.log().count('"worker.started"') == 2

        await poll(started, attempts=400)
        yield d
        assert d.stop() == 0, "the worker must stop cleanly on SIGTERM"
        assert '"worker.stopped"' in d.log()
    finally:
        for process in (d.process, d.codec_process):
            if process and process.poll() is None:
                process.kill()


def _query(d: Deployment, wid: str) -> dict[str, Any]:
    out = d.cli(
        "workflow",
        "query",
        "--namespace",
        "relationships",
        "--workflow-id",
        wid,
        "--name",
        "state",
        "-o",
        "json",
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout)["queryResult"][0])


async def test_the_readme_walk_through_drives_a_whole_life(deployment: Deployment) -> None:
    """invite → accept → permission → end → reinstate → accept, with nothing but the CLI."""
    run = deployment.bash(walk_through())
    assert run.returncode == 0, run.stdout + run.stderr
    found, _ = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index('{\n  "queryResult"') :])
    view = found["queryResult"][0]
    assert (view["state"], view["reinstated_count"], view["purchase_permission"]) == ("active", 1, False)

    records = Records(deployment.records_url)
    trail = records.audit_trail("relationship/p-100/contoso")
    assert [r["operation"] for r in trail] == [
        "CreateCustomerInvitation",
        "AddCustomer",
        "CreateSelfServePolicy",
        "SuspendCustomerRelationship",
        "ResumeCustomerRelationship",
        "RemovePartnerCustomerRelationship",
        "ReinstateCustomer",
        "AddCustomer",
    ]
    row = records.customer("public", "p-100", "contoso")
    assert row and (row["state"], row["reinstated_count"], row["version"]) == ("active", 1, 8)
    # Two tiers: the reseller's customer is in its provider's list, with the reseller.
    [linked] = [r for r in records.customer_list("public", "dist-1") if r["customer_id"] == "fourth-coffee"]
    assert (linked["partner_id"], linked["indirect_provider_id"], linked["state"]) == ("r-200", "dist-1", "active")
    assert "public,r-200,dist-1,fourth-coffee" in run.stdout  # the export the provider reads
    records.dispose()

    to = [(m["To"], " ".join(str(m["Subject"]).split())) for m in deployment.sink.messages()]
    # Contoso: 2 invitations, 2 partner notices, 3 customer notices (suspended, resumed, ended);
    # Fourth Coffee: its invitation, and the reseller and its provider told of the acceptance.
    assert len(to) == 10, to
    assert ("desk@northwind.example", "Fourth Coffee accepted Tailspin as its reseller") in to
    assert ("ops@tailspin.example", "Fourth Coffee accepted your reseller relationship") in to
    # The tokens were live in the mail only: never in the worker's logs or the CLI's output.
    tokens = deployment.tokens()
    assert len(tokens) == 3
    for token in tokens:
        assert token not in deployment.log()
    history = deployment.cli(
        "workflow",
        "show",
        "--namespace",
        "relationships",
        "--workflow-id",
        "relationship/p-100/contoso",
        "-o",
        "json",
    )
    assert history.returncode == 0
    # A used token is in history (the accepted update's input), never a live one.
    for token in tokens:
        assert history.stdout.count(token) <= 1
    email = b"admin@contoso.example"
    assert any(email in data for data in payload_data(json.loads(history.stdout))), "opened by the codec server"
    show = [str(BIN / "temporal"), "workflow", "show", "--namespace", "relationships"]
    without_codec = {k: v for k, v in deployment.env.items() if k != "TEMPORAL_CODEC_ENDPOINT"}
    sealed = subprocess.run(
        [*show, "--workflow-id", "relationship/p-100/contoso", "-o", "json"],
        env=without_codec,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not any(email in data or b"Contoso Ltd" in data for data in payload_data(json.loads(sealed.stdout)))


async def test_the_readme_gdap_walk_through_approves_assigns_and_the_customer_ends_it(deployment: Deployment) -> None:
    """A newcomer's delegated admin relationship, from `make run`: the CLI, the mail's link, the
    customer's own end; the relationship is sealed in Temporal like the reseller's."""
    run = deployment.bash(walk_through("gdap walk-through"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "delegated-admin/p-100/contoso/helpdesk: approvalPending" in run.stdout
    listed = run.stdout[run.stdout.index("WORKFLOW ID") :]
    assert "delegated-admin/p-100/contoso/helpdesk" in listed and "active" in listed
    wid = "delegated-admin/p-100/contoso/helpdesk"
    records = Records(deployment.records_url)

    async def ended() -> dict[str, Any] | None:
        row = records.current("entities", wid)
        return row if row and row["state"] == "terminated" else None

    row = await poll(ended)
    assert row["fields"]["terminated_by"] == "customer"
    assert row["fields"]["assignments"] == {
        "helpdesk-agents": {"roles": ["Helpdesk Administrator"], "status": "deleted"}
    }
    trail = [r["operation"] for r in records.audit_trail(wid)]
    assert trail[:4] == [
        "CreateDelegatedAdminRelationship",
        "CreateDelegatedAdminRelationshipRequest",
        "ApproveDelegatedAdminRelationship",
        "ActivateDelegatedAdminRelationship",
    ]
    assert "CreateDelegatedAdminAccessAssignment" in trail and trail[-1] == "TerminatedDelegatedAdminRelationship"
    records.dispose()
    subjects = [" ".join(str(m["Subject"]).split()) for m in deployment.sink.messages()]
    assert subjects[0] == "Fabrikam asks for admin roles in Contoso Ltd"
    assert "The admin roles of Fabrikam in Contoso Ltd were ended" in subjects
    for token in deployment.tokens():
        assert token not in deployment.log()


async def test_wrong_tokens_roles_and_partners_are_refused_over_the_cli(deployment: Deployment) -> None:
    wid = "relationship/p-100/northwind"
    where = ["--namespace", "relationships", "--workflow-id", wid]
    sam = {"user": "sam@fabrikam.example", "role": "sales_agent", "partner_id": "p-100"}
    deployment.register("p-100")

    def proof(action: str, actor: dict[str, str] = sam) -> str:
        return deployment.signer.for_actor(action, wid, Actor.model_validate(actor))

    start = {
        "cloud": "public",
        "partner": {"id": "p-100"},
        "customer": {"id": "northwind", "company": "Northwind", "admin_email": "it@northwind.example"},
        "origin": "invitation",
        "actor": sam,
        "proof": proof("invite"),
    }
    args = ["workflow", "start", *where, "--task-queue", "relationships", "--type", "Relationship"]
    first = deployment.cli(*args, "--id-conflict-policy", "UseExisting", "--input", json.dumps(start))
    assert first.returncode == 0, first.stderr
    again = deployment.cli(*args, "--id-conflict-policy", "UseExisting", "--input", json.dumps(start))
    run_id = re.compile(r"RunId\s+(\S+)")
    assert run_id.findall(first.stdout) == run_id.findall(again.stdout), "one relationship, not two"
    duplicate = deployment.cli(*args, "--input", json.dumps(start))
    # Whatever the CLI's default conflict policy, the same run answers or the start is refused.
    if duplicate.returncode == 0:
        assert run_id.findall(duplicate.stdout) == run_id.findall(first.stdout)
    else:
        assert "already" in duplicate.stderr.lower()

    async def invited() -> bool:
        return bool(deployment.tokens())

    await poll(invited)
    update = ["workflow", "update", "execute", *where, "--name"]
    admin = {"user": "Pat", "email": "it@northwind.example"}
    cases = [
        (
            "accept_invitation",
            {"token": "guess", "customer_admin": admin, "accept_agreement": True},
            "GuardFailed",
        ),
        ("resend_invitation", {"actor": {**sam, "role": "helpdesk_agent"}}, "PermissionDenied"),
        ("resend_invitation", {"actor": {**sam, "partner_id": "p-999"}}, "PermissionDenied"),
        ("set_purchase_permission", {"actor": sam, "allowed": True}, "PermissionDenied"),
        ("resend_invitation", {"actor": sam}, "PermissionDenied"),  # no proof: a bare claim
        ("resend_invitation", {"actor": sam, "proof": proof("reinstate")}, "PermissionDenied"),  # another action's
        ("end_relationship", {"actor": sam, "proof": proof("end_relationship")}, "TransitionNotAllowed"),
        ("accept_invitation", {"token": 7, "customer_admin": admin}, "InvalidInput"),
    ]
    for name, payload, kind in cases:
        out = deployment.cli(*update, name, "--input", json.dumps(payload))
        assert out.returncode != 0 and f"type: {kind}" in out.stderr, (name, out.stderr)
    assert _query(deployment, wid)["state"] == "invited"
    assert len(deployment.sink.messages()) == 1

    token = deployment.tokens()[-1]
    accepted = deployment.cli(
        *update,
        "accept_invitation",
        "--input",
        json.dumps({"token": token, "customer_admin": admin, "accept_agreement": True}),
    )
    assert accepted.returncode == 0, accepted.stderr
    assert _query(deployment, wid)["state"] == "active"

    # The worker's Prometheus endpoint: SDK metrics and our business counters.
    async with httpx.AsyncClient() as web:
        metrics = (await web.get(f"http://{deployment.metrics}/metrics")).text
    assert re.search(r'partnerflow_rejections\S*\{[^}]*rule="token_is_valid"[^}]*\} 1', metrics)
    assert re.search(
        r'partnerflow_rejections\S*\{[^}]*rule="role"[^}]*update="set_purchase_permission"[^}]*\} 1', metrics
    )
    assert re.search(r'partnerflow_transitions\S*\{[^}]*trigger="accept_invitation"[^}]*\} 1', metrics)
    assert re.search(r'partnerflow_emails_sent\S*\{[^}]*kind="invitation"[^}]*\} 1', metrics)
    assert "temporal_workflow_task" in metrics or "temporal_request" in metrics


async def test_bad_raw_start_json_fails_the_workflow_with_the_field_named(deployment: Deployment) -> None:
    """No stuck workflow task: the workflow fails at once and says what is wrong."""
    wid = "relationship/p-100/bad-input"
    where = ["--namespace", "relationships", "--workflow-id", wid]
    body = {
        "cloud": "public",
        "partner": {"id": "p-100", "name": "Fabrikam"},
        "customer": {"id": "bad-input"},
    }
    out = deployment.cli(
        "workflow",
        "execute",
        *where,
        "--task-queue",
        "relationships",
        "--type",
        "Relationship",
        "--input",
        json.dumps(body),
    )
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "customer.company: Field required" in text and "origin: Field required" in text
    described = deployment.cli("workflow", "describe", *where, "-o", "json")
    assert json.loads(described.stdout)["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_FAILED"
