"""Nothing a user types becomes live on someone else's screen: the Web UI's Markdown, a
spreadsheet opening the export, a terminal showing the CLI's output, a mail server's envelope."""

from __future__ import annotations

import csv
import io
import re

import markdown_it
import pytest
from pydantic import ValidationError

from partnerflow.states.inert import csv_cell, markdown, terminal
from partnerflow.states.models import STRICT, Actor, Customer, StartRelationship
from partnerflow.testing import ADMIN, Harness, actor, start_input

HOSTILE = [
    "[Click to verify](http://evil.example)",
    "![x](http://evil.example/p.png)",
    "<img src=x onerror=alert(1)>",
    "**bold** _em_ `code` # heading",
    "admin@contoso.example www.evil.example http://evil.example",
    "1. list | table | ~~strike~~ & &amp;",
]


def rendered(text: str) -> str:
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_renders_what_was_typed_and_nothing_more(text: str) -> None:
    """No link, image, HTML or emphasis survives; the words read as typed."""
    html = rendered(markdown(text))
    assert not re.search(r"<(a|img|em|strong|code|h\d|ol|table|del|script)\b", html)
    visible = re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert visible.strip() == text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("Contoso Ltd", "Contoso Ltd"),
        (3, 3),
    ],
)
def test_a_cell_that_would_start_a_formula_is_text(value: object, shown: object) -> None:
    assert csv_cell(value) == shown


def test_control_sequences_never_reach_a_terminal() -> None:
    assert terminal("a\x1b[2Jb\x1b]0;pwned\x07c\x9bd\u2028e\nf\tg") == "a?[2Jb?]0;pwned?c?d?e\nf\tg"


@pytest.mark.parametrize(
    "address",
    ["list:@evil.example", "a@[10.0.0.1].x", "a@10.0.0.1", '"a b"@x.example', "a@b@c.example", "a..b@x.example",
     "a@x", "a(comment)@x.example", "<a@x.example>", "a@x.example>", "=?utf-8?q?a?=@x.example"],
)  # fmt: skip
def test_an_address_is_refused_unless_it_is_exactly_one_deliverable_mailbox(address: str) -> None:
    """The address validated is the address delivered: no group, route, IP literal or comment."""
    with pytest.raises(ValidationError, match="must be an email address"):
        Actor.model_validate({"user": address, "role": "sales_agent", "partner_id": "p-1"}, context=STRICT)
    customer = Customer.model_validate(
        {"id": "c", "company": "C", "admin_email": "A.B+x@Sub.Example.com"}, context=STRICT
    )
    assert customer.admin_email == "a.b+x@sub.example.com"


def test_ids_that_differ_only_by_case_are_one_id() -> None:
    body = start_input(partner={"id": "P-100"}, actor=actor(partner_id="P-100"))
    start = StartRelationship.model_validate(body, context=STRICT)
    assert start.partner.id == "p-100" and start.actor.partner_id == "p-100"
    assert start.workflow_id == start.workflow_id.lower()


async def test_the_web_ui_shows_names_and_addresses_as_text(partnerflow: Harness) -> None:
    """A company named like a link and the accepting admin's address are inert in the details."""
    handle = await partnerflow.start(customer={"company": "[Click to verify](http://evil.example)"})
    await partnerflow.wait_for_state(handle, "invited")
    accept = {"token": partnerflow.token(), "customer_admin": ADMIN, "accept_agreement": True}
    await partnerflow.update(handle, "accept_invitation", accept)
    meta = await handle.query("__temporal_workflow_metadata")
    details = meta.current_details if hasattr(meta, "current_details") else meta["currentDetails"]
    html = rendered(details)
    assert "<a " not in html and "evil.example" in html and "admin@contoso.example" in html


def test_the_import_report_neutralises_formulas() -> None:
    """What `partnerflow import` writes back for a hostile row opens as text in a spreadsheet."""
    from partnerflow.importer import RowResult, write_report

    out = io.StringIO()
    hostile = RowResult(
        row=1, cloud="public", partner_id="p-1", customer_id="c-1", status="failed", error='=HYPERLINK("x")'
    )
    write_report(out, [hostile])
    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["error"] == '\'=HYPERLINK("x")' and row["partner_id"] == "p-1"


async def test_new_input_is_read_by_today_s_rules_in_the_workflow(partnerflow: Harness) -> None:
    """Raw JSON (any SDK, the `temporal` CLI) meets the same rules: a start with an id in upper
    case is refused, and so is an update whose actor's address is a group."""
    from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

    body = start_input(partner={"id": "P-100"}, actor=actor(partner_id="P-100"))
    refused = await partnerflow.client.start_workflow(
        "Relationship", body, id=f"relationship/P-100/{body['customer']['id']}", task_queue=partnerflow.task_queue
    )
    partnerflow.handles.append(refused)
    with pytest.raises(WorkflowFailureError) as failed:
        await refused.result()
    assert "workflow_id must be relationship/p-100/" in str(failed.value.cause)

    handle = await partnerflow.start()
    await partnerflow.wait_for_state(handle, "invited")
    with pytest.raises(WorkflowUpdateFailedError) as update_refused:
        await partnerflow.update(handle, "resend_invitation", {"actor": actor(user="list:@evil.example")})
    assert "actor.user: must be an email address" in str(update_refused.value.cause)
