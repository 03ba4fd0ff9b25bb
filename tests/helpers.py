"""Helpers that only this project's tests share (the test kit, `partnerflow.testing`, has the rest)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from partnerflow.activities.records import Records
from partnerflow.client import Relationships
from partnerflow.mailsink import MailSink, text_of
from partnerflow.runtime.keys import Signer, ensure_dev_keys
from partnerflow.runtime.migrate import upgrade
from partnerflow.states.models import Cloud, Partner
from partnerflow.testing import BIN, KIT_KEYS, TOKEN_IN_LINK, client_for, free_port

ROOT = Path(__file__).resolve().parent.parent
#: temporal-dev.yml seals payloads with `make run`'s keyring; the kit's workers (plain, as a backend
#: team's tests run them) and the processes the tests start do not (conftest), unless a test
#: says so (`Deployment(sealed=True)`, tests/test_make_run.py).
PLAIN = {"PARTNERFLOW_ENCRYPTION__KEYS_FILE": ""}

# CONTRACT.md's update table, restated on purpose: the table must match it.
CONTRACT: dict[str, tuple[set[str], str]] = {
    "accept_referral": ({"referred"}, "invited"),
    "decline_referral": ({"referred"}, "referral_declined"),
    "resend_invitation": ({"invited", "invitation_expired"}, "invited"),
    "cancel_invitation": ({"invited", "invitation_expired"}, "cancelled"),
    "accept_invitation": ({"invited"}, "active"),
    "decline_invitation": ({"invited"}, "declined"),
    "set_purchase_permission": ({"active"}, "active"),
    "suspend": ({"active"}, "suspended"),
    "resume": ({"suspended"}, "active"),
    "end_relationship": ({"active", "suspended"}, "ended"),
    "remove_partner": ({"active", "suspended"}, "ended"),
    "reinstate": ({"ended"}, "invited"),
}


class Deployment:
    """`worker.py` as its own process, configured the way an operator would: by environment."""

    def __init__(self, address: str, sink: MailSink, tmp: Path, name: str = "worker", *, sealed: bool = False) -> None:
        """`sealed`: as `make run` is, personal data sealed with its keyring, and a codec server
        that the `temporal` CLI reaches through TEMPORAL_CODEC_ENDPOINT."""
        self.address = address
        self.sink = sink
        self.home = tmp / "home"
        if not (self.home / ".dev" / "mail").exists():
            (self.home / ".dev").mkdir(parents=True, exist_ok=True)
            (self.home / ".dev" / "mail").symlink_to(sink.maildir)
        self.records_url = f"sqlite:///{tmp / 'records.db'}"
        self.log_path = tmp / f"{name}.log"
        self.metrics = f"127.0.0.1:{free_port()}"
        codec_port = free_port()
        self.codec = f"http://127.0.0.1:{codec_port}" if sealed else None
        self.codec_process: subprocess.Popen[bytes] | None = None
        sealing = {"TEMPORAL_CODEC_ENDPOINT": self.codec, "PARTNERFLOW_CODEC_SERVER__PORT": str(codec_port)}
        self.env = {
            **{k: v for k, v in os.environ.items() if not (sealed and k in PLAIN)},
            **(sealing if self.codec else {}),
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "TEMPORAL_ADDRESS": address,
            "PARTNERFLOW_TEMPORAL__ADDRESS": address,
            "PARTNERFLOW_RECORDS__URL": self.records_url,
            "PARTNERFLOW_SMTP__PORT": str(sink.port),
            "PARTNERFLOW_LOG__FORMAT": "json",
            "PARTNERFLOW_LOG__LEVEL": "DEBUG",
            "PARTNERFLOW_METRICS__PROMETHEUS": self.metrics,
        }
        self.process: subprocess.Popen[bytes] | None = None
        ensure_dev_keys(ROOT / ".dev" / "keys")  # temporal-dev.yml's issuers, as `make run` makes them

    @property
    def signer(self) -> Signer:
        """What `make run`'s CLI signs with (temporal-dev.yml's `signer`): the worker believes it."""
        return Signer.from_file("partner-services", ROOT / ".dev" / "keys" / "partner-services.pem")

    def register(self, *partner_ids: str, cloud: str = "public", **facts: Any) -> None:
        """Partners in the registry, as an operator adds them (`partnerflow partner add`)."""
        upgrade(self.records_url)
        records = Records(self.records_url)
        try:
            for partner_id in partner_ids:
                entry = Partner.model_validate({"name": f"Partner {partner_id}", **facts, "id": partner_id})
                records.put_partner(cloud, entry, now=datetime.now(UTC))
        finally:
            records.dispose()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )
        if self.codec:
            self.codec_process = subprocess.Popen(
                [sys.executable, "-m", "partnerflow.codecserver"],
                stdout=self.log_path.with_suffix(".codec.log").open("wb"),
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )

    async def codec_up(self) -> bool:
        if not self.codec:
            return True
        try:
            async with httpx.AsyncClient() as web:
                return (await web.post(f"{self.codec}/decode", content='{"payloads": []}')).status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        assert self.process
        if self.codec_process:
            self.codec_process.terminate()
            self.codec_process.wait(timeout=60)
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "temporal"), *args], env=self.env, capture_output=True, text=True, timeout=60)

    def bash(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def tokens(self) -> list[str]:
        return [t for m in self.sink.messages() for t in TOKEN_IN_LINK.findall(text_of(m))]


def payload_data(node: Any) -> list[bytes]:
    """Every payload's data in a `temporal workflow show --output json` document, base64 undone."""
    if isinstance(node, list):
        return [d for item in node for d in payload_data(item)]
    if not isinstance(node, dict):
        return []
    found = [base64.b64decode(node["data"])] if isinstance(node.get("metadata"), dict) and "data" in node else []
    return found + [d for value in node.values() for d in payload_data(value)]


def relationships_on(env: WorkflowEnvironment) -> Relationships:
    """The typed client, signing for its actors with the kit's partner-services key."""
    return Relationships({cloud: client_for(env, cloud) for cloud in Cloud}, signer=KIT_KEYS.partners)
