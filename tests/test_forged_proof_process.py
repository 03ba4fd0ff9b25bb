"""A forged proof is refused, never a crashed worker, even as the first bad signature its process sees.

cryptography's Rust core imports `cryptography.exceptions` lazily, the first time it must
raise `InvalidSignature`. In an update validator that import went through the workflow
sandbox, which loaded the Rust extension a second time: the process aborted (SIGABRT), taking
every workflow task of the worker with it. Only a fresh process shows it (any earlier bad
signature outside the sandbox hides it), so the check runs in one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, tempfile
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.testing import WorkflowEnvironment
    from partnerflow.activities.records import Records
    from partnerflow.mailsink import MailSink
    from partnerflow.runtime import search_attributes
    from partnerflow.runtime.converter import data_converter
    from partnerflow.runtime.keys import Signer
    from partnerflow.states.names import NAMESPACES
    from partnerflow.testing import BIN, KIT_KEYS, actor, free_port, running

    async def main() -> str:
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=data_converter
        )
        try:
            for namespace in NAMESPACES.values():
                await search_attributes.register(env.client, namespace)
            with tempfile.TemporaryDirectory() as tmp, MailSink(Path(tmp) / "mail", port=free_port()) as sink:
                records = Records(f"sqlite:///{tmp}/records.db")
                records.create_schema()
                async with running(env, sink, records) as h:
                    handle = await h.bring_to("invited")
                    genuine = KIT_KEYS.partners
                    forger = Signer(genuine.issuer, Ed25519PrivateKey.generate(), genuine.kid)
                    who = actor()
                    proof = forger.for_actor("resend_invitation", handle.id, __import__(
                        "partnerflow.states.models", fromlist=["Actor"]).Actor.model_validate(who))
                    try:
                        await h.update(handle, "resend_invitation", {"actor": who, "proof": proof}, prove=False)
                    except WorkflowUpdateFailedError as refused:
                        return f"refused {refused.cause.type}"
                    return "accepted"
        finally:
            await env.shutdown()

    print(asyncio.run(main()), flush=True)
    os._exit(0)  # temporalio/sdk-python#300: no interpreter teardown under the SDK's threads
    """
)


def test_a_forged_update_proof_in_a_fresh_worker_process_is_refused(tmp_path: Path) -> None:
    # Files, not pipes: an aborted process leaves its test server holding a pipe open.
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=stdout, stderr=stderr, timeout=300)
    assert done.returncode == 0, err.read_text()[-3000:]
    assert out.read_text().strip().splitlines()[-1] == "refused PermissionDenied"
