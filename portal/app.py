"""The acceptance page: the customer's global admin reads the request and accepts or declines.

It keeps no state: every answer comes from the relationship's workflow through
the same typed client backend services use. The plain token is only ever in the
link, the form and the update it sends.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from partnerflow.client import (
    GuardFailed,
    InvalidInput,
    NotFound,
    RelationshipError,
    Relationships,
    TransitionNotAllowed,
    Unavailable,
)
from partnerflow.portal.security import CSRF_COOKIE, Csrf, Hardened, WrongTokenLimiter
from partnerflow.runtime import tracing
from partnerflow.runtime.config import PortalSettings
from partnerflow.states.errors import problems
from partnerflow.states.models import (
    AcceptInvitation,
    Cloud,
    CustomerAdmin,
    DeclineInvitation,
    InvitationStatus,
    InvitationView,
)

log = structlog.get_logger("partnerflow.portal")
HERE = Path(__file__).resolve().parent
_WORKFLOW_ID = re.compile(r"relationship/[A-Za-z0-9][A-Za-z0-9._-]{0,99}/[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,200}")

NOT_VALID = (
    "This invitation link is not valid",
    "The link may be incomplete or mistyped. Ask your partner to send you a new invitation.",
)
SPENT: dict[InvitationStatus, tuple[str, str]] = {
    InvitationStatus.ACCEPTED: (
        "This invitation has already been used",
        "It was accepted: the reseller relationship is in place. Nothing more to do here.",
    ),
    InvitationStatus.DECLINED: (
        "This invitation has already been used",
        "It was declined. If that was a mistake, ask your partner for a new invitation.",
    ),
    InvitationStatus.REPLACED: (
        "This invitation is no longer valid",
        "A newer invitation replaced it. Use the link in the latest email, or ask your partner for another.",
    ),
    InvitationStatus.CANCELLED: (
        "This invitation is no longer valid",
        "Your partner cancelled it. Ask your partner for a new invitation if you still want one.",
    ),
    InvitationStatus.EXPIRED: (
        "This invitation has expired",
        "Ask your partner to send you a new invitation.",
    ),
}

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # a company called <script> is shown as text
    undefined=jinja2.StrictUndefined,
)


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def problem(status: int, title: str, text: str) -> HTMLResponse:
    return render("problem.html", status, title=title, text=text)


class Portal:
    def __init__(self, relationships: Relationships, settings: PortalSettings) -> None:
        self.relationships = relationships
        self.settings = settings
        self.limiter = WrongTokenLimiter(settings.wrong_token_limit, settings.wrong_token_window_s)
        key = settings.csrf_key.get_secret_value().encode() if settings.csrf_key else None
        self.csrf = Csrf(key)

    # --- shared checks -----------------------------------------------------------
    def _client(self, request: Request) -> str:
        """The real client, as the hardening middleware found it (proxies only if configured)."""
        return str(request.scope.get("state", {}).get("client", "-"))

    async def _lookup(self, request: Request, wid: str, token: str) -> tuple[Cloud, InvitationView] | HTMLResponse:
        """The live invitation, or the page that explains why there is none; every outcome
        takes at least `min_answer_ms`, so timing does not tell a known relationship apart."""
        began = time.monotonic()
        found = await self._find(request, wid, token)
        await asyncio.sleep(max(0.0, self.settings.min_answer_ms / 1000 - (time.monotonic() - began)))
        return found

    async def _find(self, request: Request, wid: str, token: str) -> tuple[Cloud, InvitationView] | HTMLResponse:
        client = self._client(request)
        if self.limiter.blocked(client):
            return problem(429, "Too many attempts", "Wait a few minutes, then open the link from your email again.")
        if not _WORKFLOW_ID.fullmatch(wid) or not _TOKEN.fullmatch(token):
            self.limiter.miss(client)
            return problem(404, *NOT_VALID)
        cloud, view = await self.relationships.find_invitation(wid, token)
        if cloud is not None and view.status is InvitationStatus.VALID:
            return cloud, view
        if view.status is InvitationStatus.UNKNOWN:
            self.limiter.miss(client)
            return problem(404, *NOT_VALID)
        return problem(410, *SPENT[view.status])

    def _form(
        self, request: Request, view: InvitationView, wid: str, token: str, status: int = 200, error: str = ""
    ) -> Response:
        visitor = request.cookies.get(CSRF_COOKIE) or Csrf.new_visitor()
        csrf = self.csrf.token(visitor, wid)
        response = render("invitation.html", status, view=view, relationship=wid, token=token, csrf=csrf, error=error)
        response.set_cookie(
            CSRF_COOKIE,
            visitor,
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
            path="/invitation",
        )
        return response

    # --- routes ------------------------------------------------------------------
    async def show(self, request: Request) -> Response:
        wid = request.query_params.get("relationship", "")
        token = request.query_params.get("token", "")
        found = await self._lookup(request, wid, token)
        if isinstance(found, HTMLResponse):
            return found
        return self._form(request, found[1], wid, token)

    async def answer(self, request: Request) -> Response:
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        wid, token = fields.get("relationship", ""), fields.get("token", "")
        if not self.csrf.ok(request.cookies.get(CSRF_COOKIE), wid, fields.get("csrf")):
            return problem(403, "This form has expired", "Open the link from your email again.")
        found = await self._lookup(request, wid, token)
        if isinstance(found, HTMLResponse):
            return found
        cloud, view = found
        accepting = request.url.path.endswith("/accept")
        name = fields.get("admin_name", "").strip() or (view.admin_email or "")
        try:
            admin = CustomerAdmin(user=name, email=view.admin_email or "")
            if accepting:
                if fields.get("agreement") != "yes":
                    return self._form(
                        request, view, wid, token, 400, "Tick the box to accept the customer agreement first."
                    )
                accept = AcceptInvitation(token=token, customer_admin=admin, accept_agreement=True)
                await self.relationships.accept_invitation(cloud, wid, accept)
            else:
                reason = fields.get("reason", "")
                decline = DeclineInvitation(token=token, customer_admin=admin, reason=reason)
                await self.relationships.decline_invitation(cloud, wid, decline)
        except ValidationError as error:
            where = ", ".join(p["field"] for p in problems(error))
            return self._form(request, view, wid, token, 400, f"Please check: {where}.")
        except (GuardFailed, TransitionNotAllowed, NotFound):
            return problem(410, "This invitation is no longer valid", "Ask your partner for a new invitation.")
        except InvalidInput as error:
            return self._form(request, view, wid, token, 400, error.message)
        return render("done.html", view=view, accepted=accepting)


Handler = Callable[[Request], Awaitable[Response]]


def _cause(error: BaseException) -> str:
    """The Temporal error behind a client error, by class and status: enough to diagnose,
    never its message (which could quote the input)."""
    cause = error.__cause__
    status = getattr(cause, "status", None)
    return type(cause).__name__ + (f"/{status.name}" if status is not None and hasattr(status, "name") else "")


def guarded(handler: Handler) -> Handler:
    """Every failure becomes a plain page; nothing is re-raised to be logged with its input."""

    async def run(request: Request) -> Response:
        # A span per request, named by its route: never its query string (the token).
        with tracing.span(
            f"page {request.method} {request.url.path}", **{"http.request.method": request.method}
        ) as span:
            response = await _answered(request)
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _answered(request: Request) -> Response:
        try:
            return await handler(request)
        except Unavailable as error:
            log.warning("portal.temporal_unavailable", cause=_cause(error))
            if request.method == "POST":  # sent, perhaps applied: only the workflow knows
                return problem(
                    503,
                    "We could not confirm your answer",
                    "It may or may not have been saved. Open the link from your email again in a few"
                    " minutes: the page will show whether your answer was taken.",
                )
            return problem(
                503, "Please try again in a few minutes", "The service is busy or down. Nothing was changed."
            )
        except RelationshipError as error:
            log.warning("portal.refused", error=error.type, rule=error.rule, cause=_cause(error))
            return problem(
                400, "This request could not be completed", "Nothing was changed. Ask your partner for help."
            )
        except Exception as error:  # the page must never show a stack trace
            log.error("portal.error", error=type(error).__name__)  # no message: it could quote the input
            return problem(500, "Something went wrong", "Nothing was changed. Please try again later.")

    return run


async def _home(request: Request) -> Response:
    return problem(404, "Nothing here", "Open the invitation link from your email.")


def create_app(relationships: Relationships, settings: PortalSettings | None = None) -> Any:
    portal = Portal(relationships, settings or PortalSettings())
    app = Starlette(
        routes=[
            Route("/", _home),
            Route("/invitation", guarded(portal.show), methods=["GET"]),
            Route("/invitation/accept", guarded(portal.answer), methods=["POST"]),
            Route("/invitation/decline", guarded(portal.answer), methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
    )
    app.router.redirect_slashes = False  # Starlette would build the redirect from the Host header
    app.state.portal = portal
    return Hardened(
        app,
        trusted_proxies=frozenset(portal.settings.trusted_proxies),
        max_query_bytes=portal.settings.max_query_bytes,
        max_body_bytes=portal.settings.max_body_bytes,
    )
