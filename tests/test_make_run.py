"""`make run`'s runner: everything comes up, the mailed link works, Ctrl-C stops it, state survives."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from playwright.async_api import async_playwright
from temporalio.client import Client, WorkflowHandle

from partnerflow.activities.records import Records
from partnerflow.mailsink import read_maildir, text_of
from partnerflow.runtime.codec import data_converter_for
from partnerflow.runtime.config import load
from partnerflow.runtime.keys import Signer
from partnerflow.states.models import Actor, RelationshipView
from partnerflow.testing import BIN, free_port, poll, register_partners, start_input
from tests.helpers import PLAIN, payload_data
from tests.test_portal_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent
EMAIL, COMPANY = start_input()["customer"]["admin_email"], start_input()["customer"]["company"]


class Runner:
    def __init__(self, tmp: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        smtp_port = str(free_port())
        self.maildir = tmp / "mail"
        self.records_url = f"sqlite:///{tmp / 'records.db'}"
        self.portal = f"http://127.0.0.1:{free_port()}"
        self.dev_dir = tmp
        self.codec = f"http://127.0.0.1:{free_port()}"
        self.ui = f"http://127.0.0.1:{free_port()}"
        self.env = {
            **{name: value for name, value in os.environ.items() if name not in PLAIN},  # sealed, as shipped
            "PARTNERFLOW_PORTAL__PORT": self.portal.rsplit(":", 1)[1],
            "PARTNERFLOW_INVITATION__LINK_BASE_URL": self.portal,
            "PARTNERFLOW_TEMPORAL__ADDRESS": self.address,
            "PARTNERFLOW_TEMPORAL__UI_PORT": self.ui.rsplit(":", 1)[1],
            "PARTNERFLOW_CODEC_SERVER__PORT": self.codec.rsplit(":", 1)[1],
            "PARTNERFLOW_TEMPORAL__DB_FILE": str(tmp / "temporal.db"),
            "PARTNERFLOW_RECORDS__URL": self.records_url,
            "PARTNERFLOW_SMTP__PORT": smtp_port,
            "PARTNERFLOW_MAIL_SINK__PORT": smtp_port,
            "PARTNERFLOW_MAIL_SINK__MAILDIR": str(self.maildir),
            "PARTNERFLOW_LOG__FORMAT": "json",
            "PARTNERFLOW_METRICS__PROMETHEUS": f"127.0.0.1:{free_port()}",
        }
        self.output = tmp / "run.log"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "partnerflow.devrun"],
            cwd=ROOT,
            env=self.env,
            stdout=self.output.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `kill_all` reaches its children
        )

        async def up() -> bool:
            assert self.process and self.process.poll() is None, self.output.read_text()
            return self.output.read_text().count('"worker.started"') == 2

        await poll(up, attempts=600)

        async def page_up() -> bool:
            try:
                async with httpx.AsyncClient() as web:
                    return (await web.get(self.portal + "/")).status_code == 404
            except httpx.TransportError:
                return False

        await poll(page_up, attempts=600)

    async def client(self) -> Client:
        """A backend service's client: the deployment's keyring (temporal-dev.yml's, made by make run)."""
        keyring = load(env=self.env).keyring()
        assert keyring is not None
        return await Client.connect(self.address, namespace="relationships", data_converter=data_converter_for(keyring))

    async def invite(self, client: Client) -> WorkflowHandle[Any, Any]:
        register_partners(self.records(), start_input())  # as `partnerflow partner add` does
        body = start_input()
        wid = f"relationship/p-100/{body['customer']['id']}"
        dev_key = Signer.from_file("partner-services", ROOT / ".dev" / "keys" / "partner-services.pem")
        body["proof"] = dev_key.for_actor("invite", wid, Actor.model_validate(body["actor"]))
        return await client.start_workflow("Relationship", body, id=wid, task_queue="relationships")

    def records(self) -> Records:
        return Records(self.records_url)

    def logs(self) -> str:
        return "".join(p.read_text() for p in [self.output, *self.dev_dir.glob("*.log")])

    def kill_all(self) -> None:
        """Whatever happened in the test, leave no server behind."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def interrupt(self) -> int:
        assert self.process
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner(tmp_path)
    yield r
    r.kill_all()


async def test_run_serves_everything_and_keeps_state_across_restarts(runner: Runner) -> None:
    await runner.start()
    text = runner.output.read_text()
    assert "partnerflow is running" in text and "Temporal Web UI http://127.0.0.1:" in text

    client = await runner.client()
    wid = (await runner.invite(client)).id

    async def mailed() -> bool:
        return len(read_maildir(runner.maildir)) == 1

    await poll(mailed)

    # The customer follows the link in the mail, ticks the agreement and accepts.
    [link] = re.findall(r"http\S+token=\S+", text_of(read_maildir(runner.maildir)[0]))
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert link.startswith(runner.portal + "/invitation?")
    async with httpx.AsyncClient() as browser:
        page = await browser.get(link)
        assert page.status_code == 200 and "Contoso Ltd" in page.text
        fields = dict(re.findall(r'name="(csrf|relationship|token)" value="([^"]*)"', page.text))
        done = await browser.post(runner.portal + "/invitation/accept", data={**fields, "agreement": "yes"})
        assert "You accepted" in done.text
        again = await browser.get(link)
        assert again.status_code == 410 and "already been used" in again.text
        made_up = await browser.get(link.replace(token, "Q" * 43))
        assert made_up.status_code == 404
    view = await client.get_workflow_handle(wid).query("state", result_type=RelationshipView)
    assert view.state == "active"
    assert runner.interrupt() == 0, runner.output.read_text()
    assert token not in runner.logs(), "no token in make run's output or any log file"

    await runner.start()  # same database files: the relationship is still there
    client = await runner.client()
    view = await client.get_workflow_handle(wid).query("state", result_type=RelationshipView)
    assert view.state == "active" and len(view.audit) == 2
    records = Records(runner.records_url)
    row = records.customer("public", "p-100", wid.rsplit("/", 1)[1])
    records.dispose()
    assert row and row["state"] == "active"
    assert runner.interrupt() == 0
    assert len(read_maildir(runner.maildir)) == 2, "invitation + partner notice; a restart sends nothing again"


async def test_run_seals_personal_data_and_the_web_ui_opens_it_through_the_codec_server(runner: Runner) -> None:
    await runner.start()
    assert f"Codec server    {runner.codec}" in runner.output.read_text()
    handle = await runner.invite(await runner.client())

    async def mailed() -> bool:
        return len(read_maildir(runner.maildir)) == 1

    await poll(mailed)
    assert (await handle.query("state", result_type=RelationshipView)).company == COMPANY

    # What Temporal keeps: not one name or address, to a reader without the keyring.
    plain = await Client.connect(runner.address, namespace="relationships")
    history = [e.SerializeToString() async for e in plain.get_workflow_handle(handle.id).fetch_history_events()]
    assert len(history) > 5 and not any(EMAIL.encode() in e or COMPANY.encode() in e for e in history)
    show = [str(BIN / "temporal"), "workflow", "show", "--address", runner.address, "--namespace", "relationships"]
    show += ["--workflow-id", handle.id, "--output", "json"]
    raw = subprocess.run(show, capture_output=True, text=True, check=True).stdout
    sealed = payload_data(json.loads(raw))
    assert len(sealed) > 3 and not any(EMAIL.encode() in d or COMPANY.encode() in d for d in sealed)
    assert EMAIL not in raw and COMPANY not in raw
    opened = subprocess.run([*show, "--codec-endpoint", runner.codec], capture_output=True, text=True, check=True)
    assert any(EMAIL.encode() in d for d in payload_data(json.loads(opened.stdout))), "the codec server opens it"

    # Ops in the Web UI read the company's name: the UI asks the codec server to open it.
    page_url = (
        f"{runner.ui}/namespaces/relationships/workflows/{quote(handle.id, safe='')}/{handle.result_run_id}/history"
    )
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(page_url)
            await page.get_by_text(COMPANY).first.wait_for(timeout=60_000)
            assert EMAIL in await page.content()
        finally:
            await browser.close()
    assert runner.interrupt() == 0, runner.output.read_text()
    assert EMAIL not in (runner.dev_dir / "codec.log").read_text(), "the codec server logs no payload"
