"""`make run`: the whole local system in one process tree, stopped by one Ctrl-C.

The Temporal dev server (SQLite in `.dev/`, Web UI, both namespaces and our
search attributes), an SMTP sink writing Maildir files, and the worker. State
survives restarts: run it again and every relationship and record is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import structlog

from partnerflow import worker
from partnerflow.mailsink import MailSink
from partnerflow.runtime import logs, search_attributes, tracing
from partnerflow.runtime.codec import ensure_dev_keyring
from partnerflow.runtime.config import Settings, load
from partnerflow.runtime.connection import connect
from partnerflow.runtime.keys import ensure_dev_keys
from partnerflow.runtime.process import exit_without_teardown, run
from partnerflow.states.names import NAMESPACES

log = structlog.get_logger("partnerflow.dev")
BIN = Path(sys.executable).parent


def _die_with_parent() -> None:
    """Children of `make run` stop when it does, even if it is killed outright (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def start_temporal(settings: Settings, dev_dir: Path) -> subprocess.Popen[bytes]:
    host, port = _host_port(settings.temporal.address)
    db_file = settings.resolve(settings.temporal.db_file)
    db_file.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(BIN / "temporal"),
        "server",
        "start-dev",
        f"--ip={host}",
        f"--port={port}",
        f"--ui-port={settings.temporal.ui_port}",
        f"--db-filename={db_file}",
        "--log-level=warn",
        "--ui-disable-news-fetch",
        # The UI opens sealed payloads through our codec server (ops read names; history holds none).
        *([f"--ui-codec-endpoint={codec_endpoint(settings)}"] if settings.keyring() else []),
        *(f"--namespace={NAMESPACES[c]}" for c in settings.temporal.clouds),
        *search_attributes.cli_flags(),
    ]
    server_log = (dev_dir / "temporal.log").open("ab")
    return subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def codec_endpoint(settings: Settings) -> str:
    return f"http://{settings.codec_server.host}:{settings.codec_server.port}"


def start_process(module: str, log_file: Path) -> subprocess.Popen[bytes]:
    """A server of ours in its own process (uvicorn owns its event loop and signals)."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        stdout=log_file.open("ab"),
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )


def terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


async def wait_for_temporal(settings: Settings, server: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise RuntimeError("the Temporal dev server exited; see temporal.log beside its database")
        try:
            client = await connect(settings, settings.temporal.clouds[0])
            await client.service_client.check_health()
            return
        except Exception:
            await asyncio.sleep(0.2)
    raise RuntimeError("the Temporal dev server did not come up in 60 s; see temporal.log")


def banner(settings: Settings, maildir: Path, dev_dir: Path) -> str:
    host, _ = _host_port(settings.temporal.address)
    namespaces = ", ".join(NAMESPACES[c] for c in settings.temporal.clouds)
    keys = settings.encryption.keys_file or "PARTNERFLOW_ENCRYPTION__KEYS"
    return "\n".join(
        [
            "",
            "partnerflow is running (Ctrl-C stops everything)",
            f"  Temporal gRPC   {settings.temporal.address}   namespaces: {namespaces}",
            f"  Temporal Web UI http://{host}:{settings.temporal.ui_port}",
            f"  SMTP sink       {settings.mail_sink.host}:{settings.mail_sink.port} → {maildir}/new",
            f"  Invitation page http://{settings.portal.host}:{settings.portal.port}/invitation"
            f"  (log: {dev_dir}/portal.log)",
            f"  Records         {settings.records_url}",
            f"  Codec server    {codec_endpoint(settings)}   (the Web UI opens sealed payloads with {keys})",
            "  Partners        partnerflow partner add p-100 --name Fabrikam   (the registry; a start needs one)",
            f"  Proven actors   {settings.proof.mode}: the CLI signs with {settings.signer.key_file}",
            f"  Metrics         http://{settings.metrics.prometheus}/metrics" if settings.metrics.prometheus else "",
            "",
        ]
    )


def with_dev_token_key(settings: Settings, dev_dir: Path) -> Settings:
    """`make run` keeps one invitation token key in .dev/, as a deployment keeps one secret."""
    if settings.invitation.resolved_token_key() is not None:
        return settings
    key_file = dev_dir / "invitation-token.key"
    if not key_file.exists():
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_urlsafe(32))
    invitation = settings.invitation.model_copy(update={"token_key_file": str(key_file)})
    return settings.model_copy(update={"invitation": invitation})


def with_dev_keys(settings: Settings) -> None:
    """`make run` is in proven mode: the development issuers' keys, made once beside the
    configured signer's (.dev/keys/), so the CLI's assertions verify (SECURITY.md); and it
    seals personal data in Temporal with a development keyring, made once too."""
    if settings.signer.key_file:
        ensure_dev_keys(settings.resolve(settings.signer.key_file).parent)
    if settings.encryption.keys_file and settings.encryption.keys is None:
        ensure_dev_keyring(settings.resolve(settings.encryption.keys_file))


async def _main() -> None:
    # `make run` runs its own server: a shell's TEMPORAL_* (another cluster's) is not for it,
    # nor for the page and the CLI it starts.
    ignored = sorted(name for name in os.environ if name.startswith("TEMPORAL_"))
    for name in ignored:
        del os.environ[name]
    settings = load()
    logs.configure(settings.log.format, settings.log.level)
    if ignored:
        log.warning("dev.temporal_env_ignored", variables=ignored)
    provider = tracing.configure(settings.tracing.otlp_endpoint, "partnerflow-worker")
    dev_dir = settings.resolve(settings.temporal.db_file).parent  # .dev/ by default
    dev_dir.mkdir(parents=True, exist_ok=True)
    maildir = settings.resolve(settings.mail_sink.maildir)
    settings = with_dev_token_key(settings, dev_dir)
    with_dev_keys(settings)
    server = start_temporal(settings, dev_dir)
    sink: MailSink | None = None
    portal: subprocess.Popen[bytes] | None = None
    codec: subprocess.Popen[bytes] | None = None
    try:
        await wait_for_temporal(settings, server)
        portal = start_process("partnerflow.portal", dev_dir / "portal.log")
        if settings.keyring():
            codec = start_process("partnerflow.codecserver", dev_dir / "codec.log")
        sink = MailSink(maildir, settings.mail_sink.host, settings.mail_sink.port).start()
        stop = asyncio.Event()
        worker.install_signal_handlers(stop)
        print(banner(settings, maildir, dev_dir), flush=True)
        await worker.serve(settings, stop)
    finally:
        if sink:
            sink.stop()
        for process in (portal, codec):
            if process:
                terminate(process)
        terminate(server)
        if provider:
            provider.shutdown()  # the last spans out before the process ends
        log.info("dev.stopped")


def main() -> int:
    return run(_main)


if __name__ == "__main__":
    exit_without_teardown(main())
