"""Trust (SECURITY.md): the partner registry, the referral takeover (finding 1) and the customer's
removal of its partner (finding 2), each as the hostile user tried it, now refused.
"""

from __future__ import annotations

import base64
import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.records import Records
from partnerflow.cli import main
from partnerflow.mailsink import MailSink
from partnerflow.states.models import Partner
from partnerflow.states.proof import Verifier
from partnerflow.testing import (
    ADMIN,
    START_OVERRIDES,
    Harness,
    actor,
    running,
    sign_start,
    sign_update,
    start_input,
)

REFERRAL = {**START_OVERRIDES["refer"]}


def _cause(error: BaseException) -> ApplicationError:
    cause = error.cause if isinstance(error, WorkflowFailureError | WorkflowUpdateFailedError) else None
    assert isinstance(cause, ApplicationError), error
    return cause


async def test_a_start_for_a_partner_not_in_the_registry_is_refused(partnerflow: Harness) -> None:
    handle = await partnerflow.start(partner={"id": "p-unknown"}, actor=actor(partner_id="p-unknown"), register=False)
    with pytest.raises(WorkflowFailureError) as refused:
        await handle.result()
    cause = _cause(refused.value)
    assert cause.type == "InvalidStart" and "partner p-unknown is not in the public partner registry" in cause.message
    assert partnerflow.records.audit_trail(handle.id) == [] and partnerflow.mail() == []


async def test_a_referral_from_a_referrer_not_in_the_registry_is_refused(partnerflow: Harness) -> None:
    body = start_input(**{**REFERRAL, "referred_by": "dist-unknown", "actor": actor(partner_id="dist-unknown")})
    handle = await partnerflow.start(body, register=False)
    with pytest.raises(WorkflowFailureError) as refused:
        await handle.result()
    assert "partner dist-unknown is not in the public partner registry" in _cause(refused.value).message


async def test_the_registry_not_the_caller_says_who_the_partner_is(partnerflow: Harness) -> None:
    """A start naming the partner otherwise (name, kind, where its notices go) changes nothing."""
    partnerflow.records.put_partner(
        "public", Partner(id="p-100", name="Fabrikam", contact_email="notices@fabrikam.example"), now=_now()
    )
    lying = {"id": "p-100", "name": "[Click](http://evil.example)", "contact_email": "notices@evil.example"}
    handle = await partnerflow.start(start_input(partner=lying), register=False)
    view = await partnerflow.wait_for_state(handle, "invited")
    assert view.partner_name == "Fabrikam"
    view = await partnerflow.update(handle, "accept_invitation", _accept(partnerflow.token()))
    notices = [m["To"] for m in partnerflow.mail() if "accepted" in m["Subject"]]
    assert notices == ["notices@fabrikam.example"]
    assert "Fabrikam" in partnerflow.mail()[0]["Subject"] and "evil" not in partnerflow.mail()[0].as_string()


async def test_the_referral_takeover_fails(partnerflow: Harness) -> None:
    """Finding 1: a referrer once chose the referred partner's customer admin (and its contact).
    Now the referral names only the partner and the customer; the referred partner decides the
    admin address when it accepts, and sees it."""
    takeover = start_input(
        **{
            **REFERRAL,
            "partner": {"id": "p-100", "name": "Fabrikam", "contact_email": "notices@evil.example"},
            "customer": {"admin_email": "mallory@evil.example"},
        }
    )
    refused = await partnerflow.start(takeover, register=False)  # the registry: the kit's Fabrikam, dist-1
    with pytest.raises(WorkflowFailureError) as caught:
        await refused.result()
    cause = _cause(caught.value)
    assert cause.type == "InvalidInput" and "customer.admin_email must be left out of a referral" in cause.message
    assert partnerflow.mail() == []

    referral = start_input(**{**REFERRAL, "partner": {"id": "p-100", "contact_email": "notices@evil.example"}})
    handle = await partnerflow.start(referral, register=False)
    view = await partnerflow.wait_for_state(handle, "referred")
    assert view.admin_email is None and view.partner_name == "Fabrikam"
    view = await partnerflow.update(handle, "accept_referral", {"actor": actor(), "admin_email": "it@contoso.example"})
    assert view.state == "invited" and view.admin_email == "it@contoso.example"
    assert [m["To"] for m in partnerflow.mail()] == ["it@contoso.example"]
    await partnerflow.update(handle, "accept_invitation", _accept(partnerflow.token()))
    # The acceptance notice goes to the partner that sent the invitation, never the referral's contact.
    notices = [m["To"] for m in partnerflow.mail() if "accepted" in m["Subject"]]
    assert notices == ["sam@fabrikam.example"]
    row = partnerflow.records.customer("public", "p-100", handle.id.split("/")[-1])
    assert row is not None and row["admin_email"] == "it@contoso.example"


async def test_a_bare_customer_id_no_longer_removes_the_partner(partnerflow: Harness) -> None:
    """Finding 2: anyone with update access could end an active relationship by naming the
    customer (part of the public workflow id). Now only the customer portal's assertion does."""
    handle = await partnerflow.bring_to("active")
    customer_id = handle.id.split("/")[-1]
    attack = {
        "customer_admin": {"user": "Mallory", "email": "mallory@evil.example", "customer_id": customer_id},
        "reason": "line one\nline two",
    }
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await partnerflow.update(handle, "remove_partner", attack, prove=False)
    cause = _cause(refused.value)
    assert cause.type == "PermissionDenied" and "proof is required for remove_partner" in cause.message
    assert (await partnerflow.view(handle)).state == "active"
    assert not [m for m in partnerflow.mail() if "removed" in m["Subject"]]
    view = await partnerflow.update(handle, "remove_partner", attack)  # the portal signed its admin in
    assert view.state == "ended" and view.audit[-1].actor_user == "admin@contoso.example"


async def test_a_trusted_caller_worker_believes_unproven_requests(
    partnerflow_time_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> None:
    """`proof.mode: trusted` is the trusted-caller model, named so: no proof is asked for; the
    registry, the referral rule and the policy still hold."""
    async with running(partnerflow_time_env, partnerflow_mail, partnerflow_records, verifier=Verifier("trusted")) as h:
        handle = await h.start(prove=False)
        await h.wait_for_state(handle, "invited")
        view = await h.update(handle, "resend_invitation", {"actor": actor()}, prove=False)
        assert view.state == "invited"
        # Whatever a trusted caller puts in `proof` never fails the workflow task (the handler reads its jti).
        odd = "e30." + base64.urlsafe_b64encode(b'{"jti": "j-1", "exp": 1e300}').decode() + ".sig"
        view = await h.update(handle, "resend_invitation", {"actor": actor(), "proof": odd}, prove=False)
        assert view.state == "invited" and len(h.tokens()) == 3
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await h.update(handle, "resend_invitation", {"actor": actor(partner_id="p-999")}, prove=False)
        assert _cause(refused.value).type == "PermissionDenied"
        stranger = await h.start(partner={"id": "p-unknown"}, actor=actor(partner_id="p-unknown"), register=False)
        with pytest.raises(WorkflowFailureError):
            await stranger.result()


async def test_a_retried_or_cron_start_cannot_pass_off_its_input_as_a_continuation(
    partnerflow_live: Harness,
) -> None:
    """A cron or retried run starts again with the caller's input and a `continued_run_id`: with a
    forged `continued` state it would have skipped admission. A start with a retry policy or a
    cron schedule is refused at once (the same check covers both; a cron run would first wait
    for its minute)."""
    body = sign_start(start_input())
    body["continued"] = {"state": "invited", "seq": 1, "fields": {"admin_email": "me@evil.example"}}
    wid = f"relationship/p-100/{body['customer']['id']}"
    handle = await partnerflow_live.client.start_workflow(
        "Relationship",
        body,
        id=wid,
        task_queue=partnerflow_live.task_queue,
        retry_policy=RetryPolicy(maximum_attempts=3),
    )
    with pytest.raises(WorkflowFailureError) as refused:
        await handle.result()
    cause = _cause(refused.value)
    assert cause.type == "InvalidStart" and "retry_policy: a lifecycle is started without one" in cause.message
    assert partnerflow_live.records.audit_trail(wid) == [] and partnerflow_live.mail() == []


async def test_an_update_that_changes_nothing_still_spends_its_proof(partnerflow: Harness) -> None:
    """Its payload (and proof) is in history all the same: the same proof with other arguments is refused."""
    handle = await partnerflow.bring_to("active")
    ada = {"actor": actor("admin_agent", user="ada@fabrikam.example")}
    await partnerflow.update(handle, "set_purchase_permission", {**ada, "allowed": True})
    proven = sign_update({**ada, "allowed": True}, "set_purchase_permission", handle.id)
    view = await partnerflow.update(handle, "set_purchase_permission", proven, prove=False)  # already so
    assert view.purchase_permission
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await partnerflow.update(handle, "set_purchase_permission", {**proven, "allowed": False}, prove=False)
    assert "already used" in _cause(refused.value).message
    assert (await partnerflow.view(handle)).purchase_permission


def _accept(token: str) -> dict[str, object]:
    return {"token": token, "customer_admin": ADMIN, "accept_agreement": True}


def _now() -> datetime:
    return datetime.now(UTC)


# --- the registry from the command line (no server needed: it lives in the records) ---------------


@pytest.fixture
def records_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    Records(url).create_schema()
    monkeypatch.setenv("PARTNERFLOW_RECORDS__URL", url)
    return url


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_partners_are_added_shown_listed_and_imported(
    records_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = _cli(
        capsys,
        "partner",
        "add",
        "P-200",
        "--name",
        "Tailspin",
        "--contact-email",
        "n@tailspin.example",
        "--locale",
        "de",
    )
    assert code == 0 and "p-200 (public): added" in out  # ids are case-folded
    code, out, err = _cli(capsys, "partner", "add", "p-201", "--name", "Bad", "--contact-email", "list:@evil.example")
    assert code == 2 and "--contact-email" in err
    code, out, err = _cli(capsys, "partner", "add", "p-202", "--name", "R", "--kind", "indirect_reseller")
    assert code == 2 and "indirect_provider_id is required" in err
    code, out, _ = _cli(capsys, "--json", "partner", "show", "p-200")
    assert json.loads(out) == {
        "id": "p-200",
        "name": "Tailspin",
        "kind": "direct",
        "indirect_provider_id": None,
        "contact_email": "n@tailspin.example",
        "locale": "de",
    }
    assert _cli(capsys, "partner", "show", "p-404")[0] == 5

    file = tmp_path / "partners.csv"
    with file.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "kind", "indirect_provider_id", "contact_email"])
        writer.writerow(["dist-9", "Distributor", "indirect_provider", "", ""])
        writer.writerow(["res-9", "Reseller", "indirect_reseller", "dist-9", "ops@res.example"])
        writer.writerow(["p-200", "Tailspin Toys", "direct", "", ""])
        writer.writerow(["bad id!", "Nobody", "direct", "", ""])
    code, out, _ = _cli(capsys, "partner", "import", str(file))
    assert code == 7
    assert out.splitlines() == [
        "row 1: dist-9 added",
        "row 2: res-9 added",
        "row 3: p-200 changed",
        out.splitlines()[3],
    ] and out.splitlines()[3].startswith("row 4: bad id! failed: invalid Partner: id:")
    code, out, _ = _cli(capsys, "partner", "list")
    lines = [line.split()[0] for line in out.splitlines()[1:]]
    assert code == 0 and lines == ["dist-9", "p-200", "res-9"]
    assert "Tailspin Toys" in out


def test_a_partner_name_with_control_characters_is_refused(
    records_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "partner", "add", "p-301", "--name", "Evil\x1b[2J")
    assert code == 2 and "--name" in err and "\x1b" not in err and out == ""
    assert _cli(capsys, "partner", "show", "p-301")[0] == 5, "a refused partner is not added"
