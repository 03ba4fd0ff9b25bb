"""The invitation page against a hostile visitor: spoofed addresses, oversized requests, Host
tricks, encoded secrets in the log, forged forms, timing. Everything here happens before the
page asks Temporal anything, so a client of a Temporal that is not there is enough."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog

from partnerflow.client import Relationships
from partnerflow.portal import app as portal_app
from partnerflow.portal.app import create_app
from partnerflow.portal.security import CSRF_COOKIE, Csrf, Hardened, real_client, redact
from partnerflow.runtime.config import PortalSettings
from partnerflow.testing import LINK_BASE, free_port

WID = "relationship/p-100/contoso"
MALFORMED = {"relationship": WID, "token": "x"}  # refused before any lookup: counted as a miss


async def page_for(settings: PortalSettings, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    dead = await Relationships.connect(f"127.0.0.1:{free_port()}", lazy=True)
    transport = httpx.ASGITransport(app=create_app(dead, settings), client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url=LINK_BASE)


@pytest.fixture
async def page() -> AsyncIterator[httpx.AsyncClient]:
    async with await page_for(PortalSettings(wrong_token_limit=3, min_answer_ms=0)) as client:
        yield client


def scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"client": (peer, 1), "headers": headers}


def test_forwarded_for_is_believed_only_from_a_configured_proxy() -> None:
    proxies = frozenset({"10.0.0.1"})
    assert real_client(scope("127.0.0.1", "6.6.6.6"), frozenset()) == "127.0.0.1"  # uvicorn's default trust: gone
    assert real_client(scope("127.0.0.1", "6.6.6.6"), proxies) == "127.0.0.1"  # not our proxy
    assert real_client(scope("10.0.0.1", "203.0.113.9"), proxies) == "203.0.113.9"
    # A client's own X-Forwarded-For is prepended to; the proxy's hop is the last one.
    assert real_client(scope("10.0.0.1", "6.6.6.6, 203.0.113.9"), proxies) == "203.0.113.9"


async def test_rotating_forwarded_for_does_not_escape_the_limit(page: httpx.AsyncClient) -> None:
    for n in range(3):
        missed = await page.get("/invitation", params=MALFORMED, headers={"X-Forwarded-For": f"198.51.100.{n}"})
        assert missed.status_code == 404
    blocked = await page.get("/invitation", params=MALFORMED, headers={"X-Forwarded-For": "198.51.100.99"})
    assert blocked.status_code == 429


async def test_misses_under_a_spoofed_victim_address_do_not_lock_the_victim_out() -> None:
    settings = PortalSettings(wrong_token_limit=3, min_answer_ms=0, trusted_proxies=["10.0.0.1"])
    async with await page_for(settings, peer="127.0.0.1") as attacker:
        for _ in range(3):
            headers = {"X-Forwarded-For": "203.0.113.9"}  # the victim's address, not from our proxy
            await attacker.get("/invitation", params=MALFORMED, headers=headers)
    async with await page_for(settings, peer="10.0.0.1") as via_proxy:
        # The victim, through the real proxy, is a fresh client: a 404 for this token, not a 429.
        shown = await via_proxy.get("/invitation", params=MALFORMED, headers={"X-Forwarded-For": "203.0.113.9"})
        assert shown.status_code == 404


async def test_oversized_queries_and_bodies_are_refused_early(page: httpx.AsyncClient) -> None:
    assert (await page.get("/invitation", params={"relationship": WID, "token": "A" * 3000})).status_code == 414
    assert (await page.post("/invitation/accept", content=b"x" * 20000)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"y" * 1024

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    streamed = await page.post("/invitation/accept", content=chunks(), headers=form)  # no Content-Length
    assert streamed.status_code == 413


async def test_no_redirect_is_built_from_the_host_header(page: httpx.AsyncClient) -> None:
    answer = await page.get("/invitation/", headers={"Host": "evil.example"})
    assert answer.status_code == 404 and "location" not in answer.headers


def test_the_token_is_redacted_however_it_is_encoded() -> None:
    for query in ("relationship=r&token=s3cret", "relationship=r&%74oken=s3cret", "TOKEN=s3cret", "csrf=s3cret"):
        assert "s3cret" not in redact(query), query
    assert redact("relationship=r&token=s3cret").startswith("relationship=r&")
    assert "s3cret" not in redact("a=1&" * 60 + "token=s3cret")  # too many fields: not parsed, not shown


async def test_an_encoded_token_never_reaches_the_log(page: httpx.AsyncClient) -> None:
    with structlog.testing.capture_logs() as logs:
        await page.get(f"/invitation?relationship={WID}&%74oken=s3cret%2Dtoken")
    assert logs and "s3cret" not in repr(logs)


async def test_a_form_posted_without_the_visitor_s_signed_value_is_refused(page: httpx.AsyncClient) -> None:
    """The CSRF value is an HMAC of the visitor's cookie and the relationship under the page's key."""
    csrf = Csrf(b"k" * 32)
    good = csrf.token("visitor-1", WID)
    assert csrf.ok("visitor-1", WID, good)
    assert not csrf.ok("visitor-2", WID, good), "another visitor's value"
    assert not csrf.ok("visitor-1", "relationship/p-100/other", good), "another relationship's value"
    assert not Csrf(b"j" * 32).ok("visitor-1", WID, good), "made without the key"
    page.cookies.set(CSRF_COOKIE, "visitor-1", path="/invitation")
    form = {"csrf": "visitor-1", "relationship": WID, "token": "A" * 43, "agreement": "yes"}  # plain double submit
    assert (await page.post("/invitation/accept", data=form)).status_code == 403


async def test_every_answer_waits_out_the_same_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quick refusal is held back to the floor, so timing tells nothing about the relationship."""
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(portal_app.asyncio, "sleep", record)
    async with await page_for(PortalSettings(min_answer_ms=300)) as client:
        assert (await client.get("/invitation", params=MALFORMED)).status_code == 404
    assert len(waited) == 1 and 0.25 < waited[0] <= 0.3


def test_a_non_ascii_csrf_value_is_a_refusal_not_a_crash() -> None:
    assert not Csrf(b"k" * 32).ok("visitor-1", WID, "ünïcode")


async def test_a_half_sent_form_is_never_acted_on() -> None:
    """The visitor goes away mid-body: the page does nothing with what arrived."""
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append("app")

    messages = [
        {"type": "http.request", "body": b"csrf=x&rel", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invitation/decline", "headers": [], "client": ("1.2.3.4", 1)}
    await Hardened(app)(scope, receive, send)
    assert called == [] and sent == []
