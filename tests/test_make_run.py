"""`make run`'s runner: everything comes up, Ctrl-C stops it, and state survives a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.records import Records
from partnerflow.converter import data_converter
from partnerflow.mailsink import read_maildir
from states.models import RelationshipView
from tests.conftest import free_port, poll, start_input

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent


class Runner:
    def __init__(self, tmp: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        smtp_port = str(free_port())
        self.maildir = tmp / "mail"
        self.records_url = f"sqlite:///{tmp / 'records.db'}"
        self.env = {
            **os.environ,
            "PARTNERFLOW_TEMPORAL__ADDRESS": self.address,
            "PARTNERFLOW_TEMPORAL__UI_PORT": str(free_port()),
            "PARTNERFLOW_TEMPORAL__DB_FILE": str(tmp / "temporal.db"),
            "PARTNERFLOW_RECORDS__URL": self.records_url,
            "PARTNERFLOW_SMTP__PORT": smtp_port,
            "PARTNERFLOW_MAIL_SINK__PORT": smtp_port,
            "PARTNERFLOW_MAIL_SINK__MAILDIR": str(self.maildir),
            "PARTNERFLOW_LOG__FORMAT": "json",
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
        )

        async def up() -> bool:
            assert self.process and self.process.poll() is None, self.output.read_text()
            return self.output.read_text().count('"worker.started"') == 2

        await poll(up, attempts=600)

    def interrupt(self) -> int:
        assert self.process
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


async def test_run_serves_everything_and_keeps_state_across_restarts(tmp_path: Path) -> None:
    runner = Runner(tmp_path)
    await runner.start()
    text = runner.output.read_text()
    assert "partnerflow is running" in text and "Temporal Web UI http://127.0.0.1:" in text

    client = await Client.connect(runner.address, namespace="relationships", data_converter=data_converter)
    body = start_input()
    wid = f"relationship/p-100/{body['customer']['id']}"
    await client.start_workflow("Relationship", body, id=wid, task_queue="relationships")

    async def mailed() -> bool:
        return len(read_maildir(runner.maildir)) == 1

    await poll(mailed)
    assert runner.interrupt() == 0, runner.output.read_text()

    await runner.start()  # same database files: the relationship is still there
    client = await Client.connect(runner.address, namespace="relationships", data_converter=data_converter)
    view = await client.get_workflow_handle(wid).query("state", result_type=RelationshipView)
    assert view.state == "invited" and len(view.audit) == 1
    records = Records(runner.records_url)
    row = records.customer("public", "p-100", body["customer"]["id"])
    records.dispose()
    assert row and row["state"] == "invited"
    assert runner.interrupt() == 0
    assert len(read_maildir(runner.maildir)) == 1, "a restart sends nothing again"
