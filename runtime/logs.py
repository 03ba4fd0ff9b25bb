"""structlog, configured once for the process (called by worker.py and the dev runner).

Everything goes through the standard library's logging, so Temporal's own
loggers, `workflow.logger` (silent on replay) and ours share one renderer: JSON
when stdout is not a terminal, console colours when it is. A last processor
drops any value under a secret-looking key, in case one slips into a log call.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from temporalio import activity, workflow

SECRET_KEYS = frozenset({"token", "password", "api_key", "secret", "authorization"})


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = "[redacted]"
    return event


def _flatten_temporal(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Lift Temporal's workflow/activity context to top-level keys every line shares."""
    for key in ("temporal_workflow", "temporal_activity"):
        context = event.pop(key, None)
        if isinstance(context, dict):
            event.setdefault("workflow_id", context.get("workflow_id"))
            event.setdefault("run_id", context.get("run_id") or context.get("workflow_run_id"))
            for extra in ("update_name", "activity_type", "attempt"):
                if extra in context:
                    event.setdefault(extra, context[extra])
    return event


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    as_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _flatten_temporal,
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        # A line below the level is dropped first, before any other processor runs.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("transitions", "aiosmtpd", "mail.log", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The context travels as structured keys; no copy of it appended to each message.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
