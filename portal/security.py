"""The page's defences: headers, CSRF, a wrong-token rate limit, and a redacted access log.

The token rides in the URL, so the page must never hand it on: no referrer, no
third-party resource, no caching, and no log line with the query string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

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

CSRF_COOKIE = "pf_visitor"
_SECRETS = frozenset({"token", "csrf"})


def redact(query: str) -> str:
    """The query string for a log line: every parameter whose name decodes to a secret's
    (`token`, `%74oken`, `TOKEN`) shows `[redacted]`; what does not parse is dropped whole."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, max_num_fields=50)
    except ValueError:
        return "[unparsed]"
    return urlencode([(k, "[redacted]" if k.strip().lower() in _SECRETS else v) for k, v in pairs], safe="[]")


class Csrf:
    """A signed double submit, bound to the visitor and the relationship: the cookie holds a
    random visitor id, the form an HMAC of it and the relationship under the page's key. A
    value planted from elsewhere (a sibling domain's cookie) is worthless without the key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)  # per process unless configured: forms then expire on restart

    @staticmethod
    def new_visitor() -> str:
        return secrets.token_urlsafe(24)

    def token(self, visitor: str, relationship: str) -> str:
        mac = hmac.new(self._key, f"{visitor}|{relationship}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def ok(self, visitor: str | None, relationship: str, field: str | None) -> bool:
        if not visitor or not field:
            return False
        # Bytes: compare_digest refuses non-ASCII strings (a TypeError, not a refusal).
        return hmac.compare_digest(self.token(visitor, relationship).encode(), str(field).encode("utf-8", "replace"))


def real_client(scope: Scope, trusted_proxies: frozenset[str]) -> str:
    """The address that sent the request: the socket's peer, unless that is a configured proxy;
    then the nearest `X-Forwarded-For` hop that is not one (a client cannot spoof past it)."""
    peer = (scope.get("client") or ("-", 0))[0]
    if peer not in trusted_proxies:
        return str(peer)
    forwarded = b",".join(v for k, v in scope.get("headers", []) if k == b"x-forwarded-for").decode("latin-1")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop
    return str(peer)


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


class _Disconnected(Exception):
    pass


class Hardened:
    """ASGI middleware: security headers on every response, size limits on what comes in
    (414 for a long query string, 413 for a large body), one redacted access-log line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: frozenset[str] = frozenset(),
        max_query_bytes: int = 2048,
        max_body_bytes: int = 16384,
    ) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.max_query_bytes = max_query_bytes
        self.max_body_bytes = max_body_bytes

    async def _body(self, receive: Receive) -> bytes | None:
        """The whole request body, read here (the page's forms are small); None past the limit,
        declared or streamed: the app never buffers more."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected  # a half-sent form is never acted on
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        scope.setdefault("state", {})["client"] = real_client(scope, self.trusted_proxies)

        async def send_hardened(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
                message["headers"] = headers
            await send(message)

        try:
            if len(scope.get("query_string", b"")) > self.max_query_bytes:
                await _plain(send_hardened, 414, "URI Too Long")
                return
            declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), b"")
            if declared and (not declared.isdigit() or int(declared) > self.max_body_bytes):
                await _plain(send_hardened, 413, "Content Too Large")  # refused before a byte is read
                return
            body = await self._body(receive)
            if body is None:
                await _plain(send_hardened, 413, "Content Too Large")
                return
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if delivered:
                    return await receive()  # after the body: only a disconnect is left to wait for
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send_hardened)
        except _Disconnected:
            status = 499  # the client went away mid-body: nothing was done
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            client = scope["state"]["client"]
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"] + (f"?{redact(query)}" if query else ""),
                status=status,
                client=client,
            )


async def _plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text.encode()})
