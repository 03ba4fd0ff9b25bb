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
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.mailsink import MailSink
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
    [link] = re.findall(r"http\S+token=\S+", site.harness.mail()[-1].get_payload())
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
