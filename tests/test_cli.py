"""The `partnerflow` command line against the dev server: outputs, exit codes, bulk import."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from temporalio.testing import WorkflowEnvironment

from partnerflow import importer
from partnerflow.activities.records import Records
from partnerflow.cli import ACTOR_ENV, main
from partnerflow.testing import ADMIN, KIT_KEYS, Harness, free_port, letters_sent, poll

pytestmark = pytest.mark.server

SAM = ["--user", "sam@fabrikam.example", "--role", "sales_agent"]
ADA = ["--user", "ada@fabrikam.example", "--role", "admin_agent"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Awaitable[Run]]


@pytest.fixture(autouse=True)
def quiet_worker() -> Iterator[None]:
    """The in-process worker logs with structlog's defaults, to stdout: keep that out of the CLI's output."""
    saved = structlog.get_config()
    # Processors too: partnerflow's first one (`filter_by_level`) reads a stdlib logger's level.
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory(), processors=[])
    yield
    structlog.configure(**saved)


@pytest.fixture
def cli(
    partnerflow_dev_env: WorkflowEnvironment,
    partnerflow_records: Records,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> Cli:
    """`partnerflow --address <dev server> ...` in a thread, with the worker's records database,
    signing with the kit's partner-services key (the kit's worker believes it)."""
    address = partnerflow_dev_env.client.service_client.config.target_host
    monkeypatch.setenv("PARTNERFLOW_RECORDS__URL", partnerflow_records.url)
    for name, value in KIT_KEYS.signer_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in ACTOR_ENV.values():
        monkeypatch.delenv(name, raising=False)

    async def run(*args: str) -> Run:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["--address", address, *args])
        out, err = capsys.readouterr()
        # The worker's relay sends a command's letters just after its changes: a test reads the
        # inbox once they are out, as the person a moment later.
        await letters_sent(partnerflow_records)
        return Run(code, out, err)

    return run


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def new_partner(cli: Cli, prefix: str = "p") -> str:
    """A fresh partner id, added to the registry with the CLI (as an operator would)."""
    partner = new_id(prefix)
    added = await cli("partner", "add", partner, "--name", "Fabrikam")
    assert added.code == 0, added.err
    return partner


def invite_args(partner: str, customer: str, *extra: str, email: str = "admin@contoso.example") -> list[str]:
    return [
        "invite",
        partner,
        customer,
        "--company",
        "Contoso Ltd",
        "--admin-email",
        email,
        *extra,
    ]


async def test_invite_then_show_and_list(
    cli: Cli, partnerflow_live_contract_queue: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invitation by the actor of the environment is shown as JSON and as a table, and listed."""
    monkeypatch.setenv(ACTOR_ENV["user"], "sam@fabrikam.example")
    monkeypatch.setenv(ACTOR_ENV["role"], "sales_agent")
    partner, customer = await new_partner(cli), new_id("c")
    wid = f"relationship/{partner}/{customer}"

    invited = await cli(*invite_args(partner, customer))
    assert invited.code == 0, invited.err
    assert invited.out.startswith(f"{wid}: invited")
    assert [m["To"] for m in partnerflow_live_contract_queue.mail()] == ["admin@contoso.example"]

    shown = await cli("--json", "show", partner, customer)
    assert shown.code == 0
    view = shown.json()
    assert view["state"] == "invited" and view["partner_id"] == partner and view["customer_id"] == customer
    assert [(a["operation"], a["actor_user"]) for a in view["audit"]] == [
        ("CreateCustomerInvitation", "sam@fabrikam.example")
    ]

    table = await cli("show", partner, customer)
    assert table.code == 0 and "CreateCustomerInvitation" in table.out and "sam@fabrikam.example" in table.out

    async def listed() -> Run | None:
        found = await cli("list", "--state", "invited", "--partner", partner)
        return found if found.code == 0 and wid in found.out else None

    found = await poll(listed)
    assert [line.split() for line in found.out.splitlines()[1:]] == [[wid, "invited", "running"]]
    as_json = await cli("--json", "list", "--customer", customer)
    assert [(r["workflow_id"], r["state"]) for r in as_json.json()] == [(wid, "invited")]
    assert (await cli("list", "--state", "active", "--partner", partner)).out.splitlines()[1:] == []


async def test_a_wrong_role_exits_3_and_sends_nothing(cli: Cli, partnerflow_live_contract_queue: Harness) -> None:
    """A helpdesk agent may not invite: PermissionDenied names the rule, on stderr and as JSON."""
    run = await cli(
        "--json",
        *invite_args(await new_partner(cli), new_id("c"), "--user", "hd@fabrikam.example", "--role", "helpdesk_agent"),
    )
    assert run.code == 3
    assert run.err.startswith("partnerflow: PermissionDenied: invite rejected: actor.role helpdesk_agent")
    assert run.json()["error"]["type"] == "PermissionDenied" and run.json()["error"]["rule"] == "role"
    assert partnerflow_live_contract_queue.mail() == []


async def test_ending_an_invitation_exits_4(cli: Cli, partnerflow_live_contract_queue: Harness) -> None:
    """An invited relationship cannot end: TransitionNotAllowed, and the state stays."""
    partner, customer = await new_partner(cli), new_id("c")
    assert (await cli(*invite_args(partner, customer, *SAM))).code == 0
    ended = await cli("end", partner, customer, *SAM, "--reason", "too early")
    assert ended.code == 4 and ended.err.startswith("partnerflow: TransitionNotAllowed: ")
    assert (await cli("--json", "show", partner, customer)).json()["state"] == "invited"


async def test_showing_an_unknown_customer_exits_5(cli: Cli, partnerflow_live_contract_queue: Harness) -> None:
    """No workflow for the id: NotFound."""
    run = await cli("show", "p-100", new_id("nobody"))
    assert run.code == 5 and run.err.startswith("partnerflow: NotFound: ")


async def test_bad_input_exits_2_naming_the_field(cli: Cli, partnerflow_live_contract_queue: Harness) -> None:
    """A bad email never reaches Temporal; the error names the field, its option and its rule."""
    run = await cli("--json", *invite_args(await new_partner(cli), new_id("c"), *SAM, email="not-an-email"))
    assert run.code == 2
    assert run.err.startswith("partnerflow: InvalidInput: customer.admin_email (--admin-email): must be an email")
    assert run.json()["error"]["fields"] == [
        {
            "field": "customer.admin_email",
            "option": "--admin-email",
            "rule": "must be an email address like name@example.com",
        }
    ]
    no_actor = await cli(*invite_args(await new_partner(cli), new_id("c")))
    assert no_actor.code == 2 and "actor.user (--user or PARTNERFLOW_ACTOR_USER): Field required" in no_actor.err
    quoted = await cli("list", "--partner", "x' OR 'a' = 'a")
    assert quoted.code == 2 and quoted.err.startswith("partnerflow: UsageError: --partner must not contain")
    assert (await cli("frobnicate")).code == 2
    assert partnerflow_live_contract_queue.mail() == []


async def test_an_unreachable_server_exits_6(
    partnerflow_records: Records, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nobody listens at the address: Unavailable."""
    code = await asyncio.to_thread(main, ["--address", f"127.0.0.1:{free_port()}", "show", "p-100", "c-1"])
    assert code == 6 and capsys.readouterr().err.startswith("partnerflow: Unavailable: ")


async def test_the_module_as_a_process_exits_with_the_code(partnerflow_dev_env: WorkflowEnvironment) -> None:
    """`python -m partnerflow.cli` ends with the command's code (5, then 6), never a teardown crash."""
    address = partnerflow_dev_env.client.service_client.config.target_host
    for where, code, kind in ((address, 5, "NotFound"), (f"127.0.0.1:{free_port()}", 6, "Unavailable")):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "partnerflow.cli", "--address", where, "--json", "show", "p-100", new_id("c"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode == code, err
        assert json.loads(out)["error"]["type"] == kind and err.decode().startswith(f"partnerflow: {kind}: ")


async def test_subscriptions_hold_up_the_end(cli: Cli, partnerflow_live_contract_queue: Harness) -> None:
    """With active subscriptions the end is refused (4); with none it ends; permission needs an admin."""
    h = partnerflow_live_contract_queue
    partner, customer = await new_partner(cli), new_id("c")
    wid = f"relationship/{partner}/{customer}"
    assert (await cli(*invite_args(partner, customer, *SAM))).code == 0
    await h.update(
        h.client.get_workflow_handle(wid),
        "accept_invitation",
        {"token": h.latest_token(), "customer_admin": ADMIN, "accept_agreement": True},
    )
    refused = await cli("permission", partner, customer, *SAM, "--allow")
    assert refused.code == 3 and "may not set_purchase_permission" in refused.err
    allowed = await cli("--json", "permission", partner, customer, *ADA, "--allow")
    assert allowed.code == 0 and allowed.json()["purchase_permission"] is True

    wrong = await cli("subscriptions", "set", partner, customer, "2", "--of", "Azure plan=1")
    assert wrong.code == 2 and "detail: its counts must add up to the active subscriptions (2)" in wrong.err
    malformed = await cli("subscriptions", "set", partner, customer, "2", "--of", "Azure plan")
    assert malformed.code == 2 and "must be WHAT=N" in malformed.err
    of = ("--of", "Azure plan=1", "--of", "Microsoft 365 E3=1")
    assert (await cli("subscriptions", "set", partner, customer, "2", *of)).code == 0
    assert h.records.active_subscriptions("public", partner, customer).count == 2
    held = await cli("--json", "end", partner, customer, *SAM)
    assert held.code == 4 and held.err.startswith("partnerflow: GuardFailed: ")
    assert held.json()["error"]["rule"] == "no_active_subscriptions"
    assert held.err.rstrip().endswith("2 active (1 Azure plan, 1 Microsoft 365 E3)")  # what to cancel first

    assert (await cli("subscriptions", "set", partner, customer, "0")).code == 0
    ended = await cli("end", partner, customer, *SAM, "--reason", "contract over")
    assert ended.code == 0 and ended.out.startswith(f"{wid}: ended")
    assert h.records.customer("public", partner, customer)["state"] == "ended"  # type: ignore[index]
    assert (await cli("subscriptions", "set", partner, customer, "-1")).code == 2


async def test_a_referral_waits_until_accepted(cli: Cli, partnerflow_live_contract_queue: Harness) -> None:
    """The referring partner's actor refers; the partner accepts and the invitation goes out."""
    partner, customer, referrer = await new_partner(cli), new_id("c"), await new_partner(cli, "r")
    referred = await cli(
        "refer", partner, customer, "--company", "Contoso Ltd", "--referred-by", referrer, *SAM,
    )  # fmt: skip
    assert referred.code == 0 and ": referred" in referred.out and partnerflow_live_contract_queue.mail() == []
    no_address = await cli("accept-referral", partner, customer, *SAM)
    assert no_address.code == 2 and "--admin-email" in no_address.err
    accepted = await cli("accept-referral", partner, customer, "--admin-email", "it@contoso.example", *SAM)
    assert accepted.code == 0 and ": invited" in accepted.out
    assert [m["To"] for m in partnerflow_live_contract_queue.mail()] == ["it@contoso.example"]
    shown = await cli("--json", "show", partner, customer)
    assert shown.json()["admin_email"] == "it@contoso.example"


async def test_export_as_csv_and_json(cli: Cli, partnerflow_live_contract_queue: Harness) -> None:
    """The customer list of one partner or of all, from the records database."""
    partner, other = await new_partner(cli), await new_partner(cli, "q")
    customers = sorted(new_id("c") for _ in range(2))
    for customer in customers:
        assert (await cli(*invite_args(partner, customer, *SAM))).code == 0
    assert (await cli(*invite_args(other, "c-other", *SAM))).code == 0

    as_csv = await cli("export", "--format", "csv", "--partner", partner)
    assert as_csv.code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert [(r["partner_id"], r["customer_id"], r["state"]) for r in rows] == [
        (partner, c, "invited") for c in customers
    ]
    assert rows[0]["workflow_id"] == f"relationship/{partner}/{customers[0]}"
    assert rows[0]["purchase_permission"] == "false" and rows[0]["created_at"].endswith("Z")

    as_json = await cli("export", "--format", "json")
    assert as_json.code == 0
    assert sorted((r["partner_id"], r["customer_id"]) for r in as_json.json()) == sorted(
        [(partner, c) for c in customers] + [(other, "c-other")]
    )
    assert (await cli("--json", "export", "--partner", other)).json()[0]["company"] == "Contoso Ltd"


# --- bulk import ---------------------------------------------------------------------


def test_the_progress_bar_is_one_line_redrawn_on_a_terminal() -> None:
    """The bar is redrawn in place with the counts; without a terminal nothing is drawn."""
    terminal = io.StringIO()
    bar = importer.Progress(4, terminal, width=8, interval=0)
    for status in ("invited", "failed", "already", "invited"):
        bar.advance(status)
    bar.finish()
    assert terminal.getvalue().split("\r")[-1] == "[########] 4/4 ok=3 failed=1\n"
    assert "\r[####    ] 2/4 ok=1 failed=1" in terminal.getvalue()
    silent = importer.Progress(4, None)
    silent.advance("invited")
    silent.finish()


ROWS = 2000
INVALID: dict[int, tuple[dict[str, str], str]] = {
    7: ({"admin_email": "not-an-email"}, "admin_email: must be an email address"),
    250: ({"customer_id": "bad id"}, "customer_id: String should match pattern"),
    777: ({"company": ""}, "company: String should have at least 1 character"),
    1200: ({"country": "usa"}, "country: String should match pattern"),
    1500: ({"partner_kind": "indirect_reseller"}, "indirect_provider_id is required"),
    1999: ({}, "cloud, partner_id, customer_id: duplicate of row 3"),
}


def write_import_file(path: Path, partners: list[str]) -> dict[int, dict[str, str]]:
    """ROWS data rows over a few partners, with the INVALID rows spoiled; returns the rows by number."""
    rows: dict[int, dict[str, str]] = {}
    for n in range(1, ROWS + 1):
        row = {
            "partner_id": partners[n % len(partners)],
            "partner_name": "Fabrikam",
            "customer_id": f"c{n:05d}",
            "company": f"Customer {n} Ltd",
            "admin_email": f"admin@c{n:05d}.example",
            "country": "US",
            "partner_kind": "",
            "indirect_provider_id": "",
        }
        row.update(INVALID.get(n, ({}, ""))[0])
        if n == 1999:
            row.update(partner_id=rows[3]["partner_id"], customer_id=rows[3]["customer_id"])
        rows[n] = row
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[1]))
        writer.writeheader()
        writer.writerows(rows.values())
    return rows


def read_report(path: Path) -> dict[int, dict[str, str]]:
    with path.open(newline="") as f:
        return {int(r["row"]): r for r in csv.DictReader(f)}


async def test_importing_2000_rows_twice_invites_each_customer_once(
    cli: Cli, partnerflow_live_contract_queue: Harness, tmp_path: Path
) -> None:
    """Each valid row is invited once (one email each), only invalid rows fail; a rerun invites nobody."""
    h = partnerflow_live_contract_queue
    partners = [await new_partner(cli) for _ in range(4)]
    rows = write_import_file(tmp_path / "customers.csv", partners)
    valid = {n: r for n, r in rows.items() if n not in INVALID}
    report = tmp_path / "report.csv"
    args = ["import", str(tmp_path / "customers.csv"), *SAM, "--concurrency", "16", "--report", str(report)]

    first = await cli(*args)
    assert first.code == 7, first.err
    assert f"imported {ROWS} rows" in first.err and f"invited={len(valid)} already=0 failed={len(INVALID)}" in first.err
    lines = read_report(report)
    assert sorted(lines) == list(range(1, ROWS + 1))
    for n, (_, rule) in INVALID.items():
        assert lines[n]["status"] == "failed" and rule in lines[n]["error"], lines[n]
    assert all(lines[n]["status"] == "invited" and lines[n]["state"] == "invited" for n in valid)
    assert all((lines[n]["partner_id"], lines[n]["customer_id"]) == (r["partner_id"], r["customer_id"])
               for n, r in valid.items())  # fmt: skip
    recipients = [m["To"] for m in h.mail()]
    assert len(recipients) == len(valid) and set(recipients) == {r["admin_email"] for r in valid.values()}

    second = await cli(*args)
    assert second.code == 7, second.err
    assert f"invited=0 already={len(valid)} failed={len(INVALID)}" in second.err
    again = read_report(report)
    assert all(again[n]["status"] == "already" and again[n]["state"] == "invited" for n in valid)
    assert {n for n, r in again.items() if r["status"] == "failed"} == set(INVALID)
    assert len(h.mail()) == len(valid)


def test_the_installed_command_works_outside_the_repository(tmp_path: Path) -> None:
    """The `partnerflow` script finds every package it needs as installed, not from the checkout
    (a package missing from pyproject.toml once passed every test run from the repository root)."""
    script = Path(sys.executable).parent / "partnerflow"
    done = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "invite" in done.stdout and "permission" in done.stdout


async def test_an_export_without_partner_columns_is_imported_for_the_acting_partner(
    cli: Cli, partnerflow_live_contract_queue: Harness, tmp_path: Path
) -> None:
    """As partners' exports look (BOM, CRLF, a `cloud` column): the partner is the actor's."""
    partner = await new_partner(cli)
    path = tmp_path / "export.csv"
    lines = ["customer_id,company,admin_email,country,cloud"]
    lines += [f"{partner}-c{n},Customer {n},admin@c{n}.example,US,public" for n in range(3)]
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    report = tmp_path / "report.csv"
    done = await cli("import", str(path), *SAM, "--partner-id", partner, "--report", str(report))
    assert done.code == 0, done.err
    rows = read_report(report)
    assert {(r["cloud"], r["partner_id"], r["status"]) for r in rows.values()} == {("public", partner, "invited")}

    unknown = tmp_path / "unknown.csv"
    unknown.write_text("customer_id,company,admin_email,region\nc-1,Contoso,a@contoso.example,EU\n")
    refused = await cli("import", str(unknown), *SAM, "--partner-id", partner)
    assert refused.code == 2 and "unknown columns: 'region'" in refused.err


async def test_the_cli_finds_temporal_as_the_temporal_cli_does(
    partnerflow_live_contract_queue: Harness,
    partnerflow_dev_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """No --address and no PARTNERFLOW_ setting: a named temporal.toml profile says where."""
    address = partnerflow_dev_env.client.service_client.config.target_host
    toml = tmp_path / "temporal.toml"
    toml.write_text(f'[profile.dev]\naddress = "{address}"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(toml))
    monkeypatch.setenv("TEMPORAL_PROFILE", "dev")
    monkeypatch.delenv("PARTNERFLOW_TEMPORAL__ADDRESS", raising=False)
    code = await asyncio.to_thread(main, ["--json", "list", "--partner", "p-100", "--limit", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert isinstance(json.loads(out), list)
    monkeypatch.setenv("TEMPORAL_PROFILE", "nowhere")  # a profile the file lacks: named, changes nothing
    code = await asyncio.to_thread(main, ["list", "--limit", "1"])
    assert code == 2 and "Profile 'nowhere' not found" in capsys.readouterr().err


async def test_the_events_commands_list_subscribe_and_show_webhooks(
    cli: Cli, partnerflow_live_contract_queue: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`partnerflow events`: the log from a cursor, a webhook's secret once, never again."""
    monkeypatch.setenv(ACTOR_ENV["user"], "sam@fabrikam.example")
    monkeypatch.setenv(ACTOR_ENV["role"], "sales_agent")
    partner, customer = await new_partner(cli), new_id("c")
    assert (await cli(*invite_args(partner, customer))).code == 0
    listed = await cli("events", "list", "--partner", partner)
    assert listed.code == 0, listed.err
    [event] = [json.loads(line) for line in listed.out.splitlines()]
    assert event["type"] == "reseller-relationship-invitation-created" and event["subject"].endswith(customer)
    assert f"next: --since {event['partnerflowseq']}" in listed.err
    later = await cli("events", "list", "--partner", partner, "--since", str(event["partnerflowseq"]))
    assert later.code == 0 and later.out == ""

    subscribed = await cli("--json", "events", "subscribe", partner, "http://127.0.0.1:9/hook", "--type", "referral-*")
    assert subscribed.code == 0, subscribed.err
    hook = json.loads(subscribed.out)
    assert hook["secret"].startswith("whsec_") and hook["after"] >= event["partnerflowseq"]
    shown = await cli("--json", "events", "webhooks", "--partner", partner)
    [webhook] = json.loads(shown.out)
    assert webhook["webhook_id"] == hook["webhook_id"] and webhook["types"] == ["referral-*"]
    assert hook["secret"] not in shown.out
    refused = await cli("events", "subscribe", partner, "http://hooks.example.com/x")
    assert refused.code == 2 and "url: must be https" in refused.err
    assert (await cli("events", "unsubscribe", hook["webhook_id"])).code == 0
    gone = await cli("events", "dead", hook["webhook_id"])
    assert gone.code == 2 and f"no active webhook {hook['webhook_id']}" in gone.err


async def test_the_gdap_commands_create_lock_show_list_terminate_and_reissue(
    cli: Cli, partnerflow_live_contract_queue: Harness
) -> None:
    """A delegated admin request from the command line, approved on the page's update, found by
    "ends within", ended, and asked for again from the same roles in one command."""
    h = partnerflow_live_contract_queue
    partner, customer = await new_partner(cli), new_id("c")
    wid = f"delegated-admin/{partner}/{customer}/helpdesk"
    args = [partner, customer, "helpdesk", *ADA]
    created = await cli(
        "gdap", "create", *args, "--company", "Contoso Ltd", "--admin-email", "admin@contoso.example",
        "--display-name", "Helpdesk", "--duration", "P90D", "--admin-role", "Helpdesk Administrator",
        "--admin-role", "License Administrator", "--lock",
    )  # fmt: skip
    assert created.code == 0, created.err
    assert created.out.startswith(f"{wid}: approvalPending (CreateDelegatedAdminRelationshipRequest by ada@")
    locked = await cli("gdap", "roles", *args, "--admin-role", "Global Reader")
    assert locked.code == 4 and "only from: created" in locked.err

    [token] = h.tokens(wid)
    handle = h.client.get_workflow_handle(wid)
    await h.update(handle, "approve", {"token": token, "customer_admin": ADMIN})
    await h.wait_for_state(handle, "active")
    shown = await cli("gdap", "show", partner, customer, "helpdesk")
    assert shown.code == 0 and "Helpdesk Administrator, License Administrator" in shown.out and "90 days" in shown.out

    async def ending() -> Run | None:
        found = await cli("--json", "gdap", "list", "--partner", partner, "--ends-within", "91")
        return found if found.code == 0 and found.json() else None

    [row] = (await poll(ending)).json()
    assert (row["workflow_id"], row["state"]) == (wid, "active") and row["ends_at"]
    later = await cli("--json", "gdap", "list", "--partner", partner, "--ends-within", "30")
    assert later.json() == []

    ended = await cli("gdap", "terminate", *args, "--reason", "contract over")
    assert ended.code == 0, ended.err
    await h.wait_for_state(handle, "terminated")
    again = await cli("--json", "gdap", "reissue", *args, "--as", "helpdesk-2")
    assert again.code == 0, again.err
    view = again.json()
    assert (view["state"], view["request_id"], view["roles"]) == (
        "approvalPending",
        "helpdesk-2",
        ["Helpdesk Administrator", "License Administrator"],
    )
    assert len(h.tokens(f"delegated-admin/{partner}/{customer}/helpdesk-2")) == 1
    bad = await cli(
        "gdap", "create", partner, customer, "x", *ADA, "--company", "C", "--admin-email", "a@b.example",
        "--display-name", "X", "--duration", "P3Y", "--admin-role", "Global Reader",
    )  # fmt: skip
    assert bad.code == 2 and "--duration" in bad.err and "P2Y" in bad.err
