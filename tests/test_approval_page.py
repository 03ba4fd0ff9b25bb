"""The approval page of a delegated admin relationship: routes over HTTP, and a real browser.

Against the real dev server, worker, SMTP sink and SQLite; the browser is Debian's Chromium.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser
from temporalio.testing import WorkflowEnvironment

from partnerflow.client import PermissionDenied
from partnerflow.mailsink import text_of
from partnerflow.portal.app import create_app
from partnerflow.runtime.config import PortalSettings
from partnerflow.states.delegated_admin import DELEGATED_ADMIN
from partnerflow.states.models import Cloud, StartRelationship
from partnerflow.testing import LINK_BASE, Harness, actor, start_input
from tests.helpers import relationships_on
from tests.test_portal_browser import Site, audit, browser, site  # noqa: F401  (fixtures)

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent
# On the dev server its steps take no time (the kit's minute is for the time-skipping server).
NOW = {"timers": {"step": "PT0S"}}


@pytest.fixture
async def page(partnerflow_live: Harness, partnerflow_dev_env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(relationships_on(partnerflow_dev_env), PortalSettings(wrong_token_limit=5))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LINK_BASE) as client:
        yield client


async def requested(harness: Harness, **overrides: Any) -> tuple[Any, str]:
    """A request locked for approval, and the link of its email."""
    handle = await harness.bring_to("approvalPending", lifecycle=DELEGATED_ADMIN, **{**NOW, **overrides})
    [link] = re.findall(r"http\S+token=\S+", text_of(harness.mail()[-1]))
    assert "/approval?relationship=delegated-admin%2F" in link
    return handle, link


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(csrf|relationship|token)" value="([^"]*)"', html))


async def test_the_page_says_in_plain_words_what_is_asked(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    _, link = await requested(partnerflow_live, auto_extend="P180D")
    shown = await page.get(link)
    assert shown.status_code == 200, shown.text
    for text in (
        "Fabrikam asks for admin roles in Contoso Ltd",
        "Helpdesk Administrator</strong>: reset passwords of users who are not admins",
        "License Administrator</strong>: assign and remove licenses",
        'id="duration">730 days<',
        "Yes, by 180 days at a time",
        "admin@contoso.example",
    ):
        assert text in shown.text
    assert 'name="referrer" content="no-referrer"' in shown.text
    german = await page.get(link + "&lang=de")
    assert 'id="duration">730 Tage<' in german.text and "Passwörter" in german.text


async def test_approving_activates_and_the_link_then_says_it_was_answered(
    partnerflow_live: Harness, page: httpx.AsyncClient
) -> None:
    handle, link = await requested(partnerflow_live)
    shown = await page.get(link)
    done = await page.post("/approval/approve", data={**form_fields(shown.text), "admin_name": "Alex Wilber"})
    assert done.status_code == 200 and "You approved the admin roles" in done.text
    view = await partnerflow_live.wait_for_state(handle, "active")
    [approval] = [a for a in view.audit if a.operation == "ApproveDelegatedAdminRelationship"]
    assert (approval.actor_user, approval.actor_role) == ("admin@contoso.example", "customer_admin")
    again = await page.get(link)
    assert again.status_code == 410 and "It was approved" in again.text
    assert "Contoso Ltd approved your admin roles" in [m["Subject"] for m in partnerflow_live.mail()]


async def test_declining_with_a_reason_ends_the_request(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    handle, link = await requested(partnerflow_live)
    shown = await page.get(link)
    done = await page.post("/approval/decline", data={**form_fields(shown.text), "reason": "<b>not now</b>"})
    assert done.status_code == 200 and "You declined the admin roles" in done.text
    view = await partnerflow_live.wait_for_state(handle, "terminated")
    assert view.audit[-1].reason == "<b>not now</b>"
    assert "Reason given: <b>not now</" in text_of(partnerflow_live.mail()[-1])  # plain text, as typed


async def test_forms_without_csrf_or_with_the_other_page_s_links_change_nothing(
    partnerflow_live: Harness, page: httpx.AsyncClient
) -> None:
    handle, link = await requested(partnerflow_live)
    shown = await page.get(link)
    fields = form_fields(shown.text)
    page.cookies.clear()
    refused = await page.post("/approval/approve", data=fields)
    assert refused.status_code == 403
    # An approval link is no invitation link, and an invitation page does not serve it.
    swapped = await page.get(link.replace("/approval?", "/invitation?"))
    assert swapped.status_code == 404 and "This invitation link is not valid" in swapped.text
    made_up = await page.get(re.sub(r"token=[^&]+", "token=" + "Z" * 43, link))
    assert made_up.status_code == 404 and "This approval link is not valid" in made_up.text
    assert (await partnerflow_live.view(handle)).state == "approvalPending"


async def test_names_are_shown_as_text(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    _, link = await requested(
        partnerflow_live, customer={"company": "<img src=x onerror=alert(1)>"}, display_name="<script>x</script>"
    )
    shown = await page.get(link)
    assert "<img src=x" not in shown.text and "&lt;img src=x onerror=alert(1)&gt;" in shown.text
    assert "<script>x" not in shown.text and "&lt;script&gt;x&lt;/script&gt;" in shown.text


async def test_approving_in_the_browser_from_the_mail(site: Site, browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    """The mail's HTML part → Chromium → keyboard only → the relationship is active; no serious
    accessibility finding; no sideways scrolling on a phone."""
    handle = await site.harness.bring_to("approvalPending", lifecycle=DELEGATED_ADMIN, **NOW)
    mail = site.harness.mail()[-1]
    html = next(p for p in mail.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    [link] = re.findall(r'href="(http[^"]+token=[^"]+)"', html)
    link = link.replace("&amp;", "&")
    assert link.startswith(site.base_url)
    context = await browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
    tab = await context.new_page()
    try:
        await tab.goto(link)
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 390
        assert await audit(tab) == []
        roles = await tab.locator("#roles li").all_inner_texts()
        assert roles == [
            "Helpdesk Administrator: reset passwords of users who are not admins",
            "License Administrator: assign and remove licenses",
        ]
        await tab.focus("#admin_name")
        await tab.keyboard.type("Alex Wilber")
        await tab.keyboard.press("Tab")  # to Approve
        assert await tab.evaluate("document.activeElement.id") == "approve"
        await tab.keyboard.press("Enter")
        await tab.wait_for_selector("#outcome")
        assert "You approved the admin roles" in await tab.locator("#outcome").inner_text()
        assert await audit(tab) == []
    finally:
        await context.close()
    view = await site.harness.wait_for_state(handle, "active")
    assert view.ends_at is not None


async def test_an_invitation_that_carries_admin_roles_is_answered_for_both_in_one_visit(
    partnerflow_live_contract_queue: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    """The typed client starts the carried request first, then the invitation; the invitation page
    lists the roles; accepting it approves them (one link, one visit)."""
    h = partnerflow_live_contract_queue
    client = relationships_on(partnerflow_dev_env)
    body = start_input(actor=actor("admin_agent", user="ada@fabrikam.example"))
    body["delegated_admin"] = {
        "request_id": "helpdesk",
        "display_name": "Helpdesk",
        "duration": "P180D",
        "roles": ["Helpdesk Administrator", "User Administrator"],
    }
    invited = await client.start(StartRelationship.model_validate(body))
    assert invited.state == "invited" and invited.admin_request == "helpdesk"
    await h.letters_sent()
    [letter] = h.mail()
    [link] = re.findall(r"http\S+token=\S+", text_of(letter))
    app = create_app(client, PortalSettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LINK_BASE) as page:
        shown = await page.get(link)
        assert shown.status_code == 200
        assert "Admin roles asked for with this invitation" in shown.text and "for 180 days:" in shown.text
        assert "User Administrator</strong>: create and manage users and groups" in shown.text
        fields = form_fields(shown.text)
        done = await page.post("/invitation/accept", data={**fields, "agreement": "yes", "admin_name": "Alex"})
    assert done.status_code == 200 and "also has the admin roles it asked for" in done.text
    carried_id = f"delegated-admin/p-100/{body['customer']['id']}/helpdesk"
    # It lives as long as the invitation's link and sends no reminders of its own.
    timers = (await client.start_input(Cloud.PUBLIC, carried_id))["timers"]
    assert (timers["approval_ttl"], timers["approval_reminders_before"]) == ("P30D", [])
    carried = h.client.get_workflow_handle(carried_id)
    view = await h.wait_for_state(carried, "active")
    assert view.roles == ("Helpdesk Administrator", "User Administrator")
    # A sales agent may invite, but not ask for admin roles: refused before anything starts.
    other = start_input()
    other["delegated_admin"] = body["delegated_admin"]
    with pytest.raises(PermissionDenied, match=r"delegated_admin: actor\.role sales_agent may not"):
        await client.start(StartRelationship.model_validate(other))
    assert h.records.audit_trail(f"relationship/p-100/{other['customer']['id']}") == []
