"""`python -m partnerflow.portal`: serve the acceptance page (make run starts it)."""

from __future__ import annotations

import sys

import uvicorn

from partnerflow.client import Relationships
from partnerflow.portal.app import create_app
from partnerflow.runtime import logs, tracing
from partnerflow.runtime.config import load
from partnerflow.runtime.process import run


async def _serve() -> None:
    settings = load()
    logs.configure(settings.log.format, settings.log.level)
    tracing.configure(settings.tracing.otlp_endpoint, "partnerflow-page")
    # Lazy: the page starts (and answers 503) even while Temporal is down.
    relationships = await Relationships.from_settings(settings, lazy=True)
    config = uvicorn.Config(
        create_app(relationships, settings.portal),
        host=settings.portal.host,
        port=settings.portal.port,
        log_config=None,  # our structlog handlers
        access_log=False,  # uvicorn's would print the token: ours redacts it
        server_header=False,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; the page decides
        # itself, from `portal.trusted_proxies` only (portal.security.real_client).
        proxy_headers=False,
    )
    await uvicorn.Server(config).serve()


def main() -> int:
    return run(_serve)


if __name__ == "__main__":
    sys.exit(main())
