"""The page's defences: headers, CSRF, a wrong-token rate limit, and a redacted access log.

The token rides in the URL, so the page must never hand it on: no referrer, no
third-party resource, no caching, and no log line with the query string.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog

log = structlog.get_logger("partnerflow.portal")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADERS: dict[str, str] = {
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

CSRF_COOKIE = "pf_csrf"
_SECRET_PARAM = re.compile(r"(token|csrf)=[^&]*", re.I)


def redact(query: str) -> str:
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=[redacted]", query)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, field: str | None) -> bool:
    """Double submit: the form's value must equal the SameSite=Strict cookie's."""
    return bool(cookie and field) and hmac.compare_digest(str(cookie), str(field))


class WrongTokenLimiter:
    """At most `limit` wrong tokens per client address per `window_s` seconds."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._misses: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        misses = self._misses.setdefault(client, deque())
        horizon = self.clock() - self.window_s
        while misses and misses[0] < horizon:
            misses.popleft()
        return misses

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self.limit

    def miss(self, client: str) -> None:
        self._recent(client).append(self.clock())
        if len(self._misses) > 100_000:  # bounded memory under a spray of addresses
            self._misses.pop(next(iter(self._misses)))


class Hardened:
    """ASGI middleware: security headers on every response, one redacted access-log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_hardened(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_hardened)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            client = (scope.get("client") or ("-", 0))[0]
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"] + (f"?{redact(query)}" if query else ""),
                status=status,
                client=client,
            )
