"""The acceptance page's routes, against the real dev server, worker, SMTP sink and SQLite."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import structlog
from pydantic import BaseModel
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from partnerflow.client import Relationships, translate
from partnerflow.mailsink import text_of
from partnerflow.portal.app import create_app
from partnerflow.runtime.config import PortalSettings
from partnerflow.states.models import Cloud, RelationshipView
from partnerflow.testing import LINK_BASE, Harness, actor, free_port, poll
from tests.helpers import relationships_on

pytestmark = pytest.mark.server


@pytest.fixture
async def page(partnerflow_live: Harness, partnerflow_dev_env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(relationships_on(partnerflow_dev_env), PortalSettings(wrong_token_limit=5))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LINK_BASE) as client:
        yield client


def link_of(harness: Harness) -> str:
    """The link of the latest invitation email, as the customer would click it."""
    for message in reversed(harness.mail()):
        found = re.search(r"http\S+token=\S+", text_of(message))
        if found:
            return found.group(0)
    raise AssertionError("no invitation link in the mail")


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(csrf|relationship|token)" value="([^"]*)"', html))


async def invited(harness: Harness, **overrides: Any) -> tuple[Any, str]:
    handle = await harness.start(**overrides)
    await harness.wait_for_state(handle, "invited")
    return handle, link_of(harness)


async def submit(page: httpx.AsyncClient, link: str, action: str, **extra: str) -> httpx.Response:
    shown = await page.get(link)
    assert shown.status_code == 200, shown.text
    return await page.post(f"/invitation/{action}", data={**form_fields(shown.text), **extra})


async def test_every_page_speaks_the_reader_s_language(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    """Errors too: the browser's language where the relationship says none, a switch honoured."""
    _, link = await invited(partnerflow_live)
    made_up = re.sub(r"token=[^&]+", "token=" + "Z" * 43, link)
    german = await page.get(made_up, headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert german.status_code == 404 and "Dieser Einladungslink ist nicht gültig" in german.text
    assert '<html lang="de">' in german.text and german.headers["content-language"] == "de"
    spanish = await page.get(link + "&lang=es", headers={"Accept-Language": "de"})
    assert "solicita ser el revendedor de Contoso Ltd" in spanish.text and 'hreflang="ja"' in spanish.text
    japanese = await page.get("/", headers={"Accept-Language": "ja"})
    assert "ここには何もありません" in japanese.text


async def test_the_link_shows_who_asks_for_what(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    _, link = await invited(partnerflow_live)
    shown = await page.get(link)
    assert shown.status_code == 200
    for text in ("Fabrikam", "Contoso Ltd", "admin@contoso.example", "customer agreement", "reseller"):
        assert text in shown.text
    assert re.search(r'id="expires">\w+ \d{1,2}, \d{4}, .* (EST|EDT)<', shown.text), "US: its main zone, named"
    headers = shown.headers
    assert headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    assert "<script>" not in shown.text  # no inline script
    assert not re.search(r'(src|href)="(https?:)?//', shown.text), "no third-party resources"
    assert "pf_visitor" in shown.headers["set-cookie"] and "samesite=strict" in shown.headers["set-cookie"].lower()


async def test_accepting_activates_and_the_link_then_says_it_was_used(
    partnerflow_live: Harness, page: httpx.AsyncClient
) -> None:
    handle, link = await invited(partnerflow_live)
    done = await submit(page, link, "accept", agreement="yes", admin_name="Alex Wilber")
    assert done.status_code == 200 and "You accepted the invitation" in done.text
    view = await partnerflow_live.view(handle)
    assert view.state == "active" and view.audit[-1].actor_user == "admin@contoso.example"
    await partnerflow_live.letters_sent()
    assert any(
        "accepted your reseller relationship" in m["Subject"] for m in partnerflow_live.mail("sam@fabrikam.example")
    )
    again = await page.get(link)
    assert again.status_code == 410 and "already been used" in again.text


async def test_accept_needs_the_agreement_ticked(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    handle, link = await invited(partnerflow_live)
    refused = await submit(page, link, "accept", admin_name="Alex")
    assert refused.status_code == 400 and "accept the customer agreement" in refused.text
    assert (await partnerflow_live.view(handle)).state == "invited"


async def test_declining_with_a_reason(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    handle, link = await invited(partnerflow_live)
    done = await submit(page, link, "decline", reason="we buy direct")
    assert done.status_code == 200 and "You declined" in done.text
    view = await partnerflow_live.view(handle)
    assert view.state == "declined" and view.audit[-1].reason == "we buy direct"
    assert (await page.get(link)).status_code == 410


async def test_a_post_without_the_csrf_cookie_changes_nothing(
    partnerflow_live: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    handle, link = await invited(partnerflow_live)
    app = create_app(relationships_on(partnerflow_dev_env))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LINK_BASE) as browser:
        shown = await browser.get(link)
        fields = form_fields(shown.text)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LINK_BASE) as attacker:
        forged = await attacker.post("/invitation/accept", data={**fields, "agreement": "yes"})
    assert forged.status_code == 403
    assert (await partnerflow_live.view(handle)).state == "invited"


async def test_a_guess_learns_nothing(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    """A wrong token on a real relationship and any token on none give the same page."""
    _, link = await invited(partnerflow_live)
    query = parse_qs(urlsplit(link).query)
    real = query["relationship"][0]
    wrong = await page.get("/invitation", params={"relationship": real, "token": "A" * 43})
    missing = await page.get("/invitation", params={"relationship": "relationship/p-1/nobody", "token": "A" * 43})
    malformed = await page.get("/invitation", params={"relationship": "../etc", "token": "<x>"})
    assert wrong.status_code == missing.status_code == malformed.status_code == 404
    assert wrong.text == missing.text == malformed.text
    assert "Contoso" not in wrong.text and "ask your partner" in wrong.text.lower()


async def test_replaced_and_cancelled_links_say_so(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    handle, first = await invited(partnerflow_live)
    await partnerflow_live.update(handle, "resend_invitation", {"actor": actor()})
    second = link_of(partnerflow_live)
    replaced = await page.get(first)
    assert replaced.status_code == 410 and "newer invitation replaced it" in replaced.text
    await partnerflow_live.update(handle, "cancel_invitation", {"actor": actor()})
    cancelled = await page.get(second)
    assert cancelled.status_code == 410 and "cancelled" in cancelled.text


async def test_an_expired_link_says_so(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    handle, link = await invited(partnerflow_live, timers={"invitation_ttl": "PT2S", "reminders_before": ["PT1S"]})

    async def expired() -> bool:
        return (await partnerflow_live.view(handle)).state == "invitation_expired"

    await poll(expired, attempts=100)
    shown = await page.get(link)
    assert shown.status_code == 410 and "expired" in shown.text


async def test_names_are_shown_as_text_not_markup(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    _, link = await invited(partnerflow_live, customer={"company": "<script>alert('x')</script> & Co"})
    shown = await page.get(link)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in shown.text
    assert "<script>alert" not in shown.text


async def test_wrong_tokens_are_rate_limited_per_address(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    _, link = await invited(partnerflow_live)
    real = parse_qs(urlsplit(link).query)["relationship"][0]
    for _ in range(5):
        assert (await page.get("/invitation", params={"relationship": real, "token": "B" * 43})).status_code == 404
    blocked = await page.get(link)  # even the right token waits now
    assert blocked.status_code == 429


async def test_temporal_down_is_a_503_and_nothing_changes() -> None:
    dead = await Relationships.connect(f"127.0.0.1:{free_port()}", lazy=True)
    app = create_app(dead)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LINK_BASE) as client:
        shown = await client.get("/invitation", params={"relationship": "relationship/p-1/c-1", "token": "C" * 43})
    assert shown.status_code == 503 and "try again" in shown.text
    assert "Traceback" not in shown.text


class LostAnswer(Relationships):
    """The first answer meets a server failure that leaves its outcome unknown (as a run
    closing under an update does: AcceptedUpdateCompletedWorkflow); later ones go through."""

    lost = 0

    async def update(self, cloud: Cloud, wid: str, name: str, command: BaseModel) -> RelationshipView:
        if not self.lost:
            self.lost += 1
            failure = ApplicationError("the Workflow completed first", type="AcceptedUpdateCompletedWorkflow")
            error = WorkflowUpdateFailedError(failure)
            raise translate(error) from error
        return await super().update(cloud, wid, name, command)


async def test_an_answer_of_unknown_outcome_is_a_503_that_says_so_and_can_be_sent_again(
    partnerflow_live: Harness, partnerflow_dev_env: WorkflowEnvironment
) -> None:
    """Never "nothing was changed" when that is not known (a chaos run once told 8 customers so)."""
    handle, link = await invited(partnerflow_live)
    app = create_app(LostAnswer(relationships_on(partnerflow_dev_env).clients))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LINK_BASE) as page:
        with structlog.testing.capture_logs() as logs:
            unknown = await submit(page, link, "accept", agreement="yes")
        assert unknown.status_code == 503 and "could not confirm your answer" in unknown.text
        assert "Nothing was changed" not in unknown.text
        assert any(e.get("cause") == "WorkflowUpdateFailedError" for e in logs)
        done = await submit(page, link, "accept", agreement="yes")  # the customer opens the link again
    assert done.status_code == 200 and "You accepted the invitation" in done.text
    assert (await partnerflow_live.view(handle)).state == "active"


async def test_no_log_line_carries_the_token(partnerflow_live: Harness, page: httpx.AsyncClient) -> None:
    """uvicorn's access log would print the query string; ours redacts it."""
    handle, link = await invited(partnerflow_live)
    token = parse_qs(urlsplit(link).query)["token"][0]
    with structlog.testing.capture_logs() as logs:
        await submit(page, link, "accept", agreement="yes")
        await page.get(link)
    assert (await partnerflow_live.view(handle)).state == "active"
    requests = [e for e in logs if e["event"] == "http.request"]
    assert len(requests) == 3 and all("token=[redacted]" in e["path"] or "?" not in e["path"] for e in requests)
    assert token not in repr(logs)


async def test_a_relationship_whose_start_was_refused_is_not_a_valid_link(
    partnerflow_live: Harness, page: httpx.AsyncClient
) -> None:
    """A start refused (an actor of another partner) leaves a failed workflow: its page says what
    an unknown one says, nothing more."""
    handle = await partnerflow_live.start(actor=actor(partner_id="p-evil"))
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    shown = await page.get("/invitation", params={"relationship": handle.id, "token": "A" * 43})
    assert shown.status_code == 404 and "not valid" in shown.text
