"""The token's whole path in a real browser: email → headless Chromium → the page → the update.

Debian's chromium through Playwright's `executable_path` (Playwright's own browser
download cannot be reached from these machines); `make test` installs it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink, text_of
from partnerflow.portal.app import create_app
from partnerflow.testing import KIT_KEYS, Harness, client_for
from partnerflow.worker import new_worker
from tests.helpers import relationships_on

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these Chromium keeps dialling Google's hosts, which this machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Site:
    harness: Harness
    base_url: str


@pytest.fixture
async def site(
    partnerflow_dev_env: WorkflowEnvironment, partnerflow_mail: MailSink, partnerflow_records: Records
) -> AsyncIterator[Site]:
    """The page on a real port (uvicorn), and a worker whose emails link to it."""
    # Our own listening socket: the browser's first connection waits in its backlog
    # until uvicorn accepts it, so there is nothing to wait for here.
    listening = socket.create_server(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    config = uvicorn.Config(create_app(relationships_on(partnerflow_dev_env)), log_config=None, access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    mailer = Mailer(SmtpSettings(port=partnerflow_mail.port))
    activities = Capabilities(partnerflow_records, mailer, base_url, verifier=KIT_KEYS.verifier())
    client = client_for(partnerflow_dev_env)
    task_queue = f"tq-{uuid.uuid4()}"
    async with new_worker(client, activities, task_queue):
        yield Site(Harness(partnerflow_dev_env, client, partnerflow_mail, partnerflow_records, task_queue), base_url)
    server.should_exit = True
    await serving


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
async def tab(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    yield page
    await context.close()


async def invitation_link(site: Site, **overrides: Any) -> tuple[Any, str]:
    handle = await site.harness.start(**overrides)
    await site.harness.wait_for_state(handle, "invited")
    [link] = re.findall(r"http\S+token=\S+", text_of(site.harness.mail()[-1]))
    assert link.startswith(site.base_url)
    return handle, link


async def test_accepting_in_the_browser_activates_the_relationship(site: Site, tab: Page, tmp_path: Path) -> None:
    handle, link = await invitation_link(site)
    await tab.goto(link)
    assert await tab.locator("#partner").inner_text() == "Fabrikam"
    assert await tab.locator("#company").inner_text() == "Contoso Ltd"
    assert await tab.locator("#admin").inner_text() == "admin@contoso.example"
    assert await tab.locator("#accept").is_disabled(), "Accept waits for the agreement"
    await tab.fill("input[name=admin_name]", "Alex Wilber")
    await tab.check("#agreement")
    assert await tab.locator("#accept").is_enabled()
    shot = ROOT / "docs" / "invitation-page.png" if os.environ.get("PARTNERFLOW_UPDATE_DOCS") else tmp_path / "p.png"
    shot.parent.mkdir(exist_ok=True)
    await tab.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    await tab.click("#accept")
    await tab.wait_for_selector("#outcome")
    assert "You accepted" in await tab.locator("#outcome").inner_text()
    assert (await site.harness.view(handle)).state == "active"
    notices = [m for m in site.harness.mail("sam@fabrikam.example") if "accepted" in m["Subject"]]
    assert len(notices) == 1

    response = await tab.goto(link)
    assert response and response.status == 410
    assert "already been used" in await tab.locator("#problem").inner_text()


async def test_declining_in_the_browser(site: Site, tab: Page) -> None:
    handle, link = await invitation_link(site)
    await tab.goto(link)
    await tab.fill("input[name=reason]", "we buy direct")
    await tab.click("#decline")
    await tab.wait_for_selector("#outcome")
    assert "You declined" in await tab.locator("#outcome").inner_text()
    view = await site.harness.view(handle)
    assert view.state == "declined" and view.audit[-1].reason == "we buy direct"


async def test_a_made_up_token_shows_the_not_valid_page(site: Site, tab: Page) -> None:
    _, link = await invitation_link(site)
    wrong = re.sub(r"token=[^&]+", "token=" + "Z" * 43, link)
    response = await tab.goto(wrong)
    assert response and response.status == 404
    assert "not valid" in await tab.locator("#problem").inner_text()
    assert "Contoso" not in await tab.content()


# --- the customer's language, accessibility, a phone --------------------------------------


async def audit(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page (WCAG 2.1 AA rules and best practice)."""
    results = await Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def test_a_german_invitation_from_the_mail_is_accepted_in_german_by_keyboard(
    site: Site, browser: Browser
) -> None:
    handle, link = await invitation_link(site, customer={"country": "DE", "locale": "de"})
    mail = site.harness.mail()[-1]
    subject = str(make_header(decode_header(mail["Subject"])))
    assert mail["Content-Language"] == "de" and subject == "Fabrikam lädt Contoso Ltd zu einer Reseller-Beziehung ein"
    # The audit injects axe-core: bypass_csp lets the page's own policy stand for everything else.
    context = await browser.new_context(locale="en-US", bypass_csp=True)  # an English browser, a German customer
    tab = await context.new_page()
    try:
        # The HTML part, as a mail client shows it; its button opens the page.
        await tab.set_content(text_of(mail, "html"))
        await tab.get_by_role("link", name="Anfrage öffnen").click()
        await tab.wait_for_url(link)  # the button is the link the text part carries
        assert await tab.locator("html").get_attribute("lang") == "de"
        assert "möchte der Reseller von Contoso Ltd werden" in await tab.locator("h1").inner_text()
        assert re.fullmatch(
            r"\d{1,2}\. \w+ \d{4}, \d{2}:\d{2}:\d{2} ME(S)?Z", await tab.locator("#expires").inner_text()
        )
        assert await audit(tab) == []

        # Keyboard only: the languages, then the name, the agreement, Accept.
        names = []
        for _ in range(8):
            await tab.keyboard.press("Tab")
            names.append(await tab.evaluate("document.activeElement.id || document.activeElement.textContent"))
        assert names == ["English", "Deutsch", "Français", "Español", "日本語", "admin_name", "agreement", "reason"]
        await tab.locator("#admin_name").focus()
        await tab.keyboard.type("Alex Wilber")
        await tab.keyboard.press("Tab")
        await tab.keyboard.press("Space")  # ticks the agreement: Accept is enabled and next
        await tab.keyboard.press("Tab")
        assert await tab.evaluate("document.activeElement.id") == "accept"
        await tab.keyboard.press("Enter")
        await tab.wait_for_selector("#outcome")
        assert await tab.locator("#outcome").inner_text() == "Sie haben die Einladung angenommen"
        assert await tab.locator("html").get_attribute("lang") == "de"
        assert await audit(tab) == []
    finally:
        await context.close()
    assert (await site.harness.view(handle)).state == "active"


async def test_the_page_follows_the_browser_s_language_and_its_switch(site: Site, browser: Browser) -> None:
    _, link = await invitation_link(site, customer={"country": "US"})  # no locale given
    context = await browser.new_context(locale="fr-FR")
    tab = await context.new_page()
    try:
        await tab.goto(link)
        assert await tab.locator("html").get_attribute("lang") == "fr"
        assert await tab.locator("#accept").inner_text() == "Accepter"
        await tab.get_by_role("link", name="日本語").click()
        await tab.wait_for_selector("html[lang=ja]")
        assert await tab.locator("#accept").inner_text() == "承諾する"
        assert await tab.locator("[aria-current=true]").inner_text() == "日本語"
    finally:
        await context.close()


@pytest.mark.parametrize("language", ["en", "de"])
async def test_the_page_works_on_a_phone_and_on_a_desktop(site: Site, browser: Browser, language: str) -> None:
    """No sideways scrolling at 390 px, no serious accessibility finding; `PARTNERFLOW_UPDATE_DOCS=1`
    writes the screenshots in docs/."""
    _, link = await invitation_link(site, customer={"locale": language, "country": {"en": "US", "de": "DE"}[language]})
    for device, viewport in (("phone", {"width": 390, "height": 844}), ("desktop", {"width": 1280, "height": 900})):
        context = await browser.new_context(viewport=viewport, bypass_csp=True, device_scale_factor=1)
        tab = await context.new_page()
        try:
            await tab.goto(link)
            assert await tab.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            assert await audit(tab) == []
            name = f"invitation-page-{language}-{device}.png"
            shot = ROOT / "docs" / name if os.environ.get("PARTNERFLOW_UPDATE_DOCS") else site_shots(name)
            await tab.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            await context.close()


def site_shots(name: str) -> Path:
    folder = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"partnerflow-shots-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
