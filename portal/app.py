"""The customer's pages: the global admin reads a request and answers it. The invitation page
accepts or declines a reseller relationship; the approval page approves or declines the admin
roles of a delegated admin relationship.

They keep no state: every answer comes from the lifecycle's workflow through the same typed
client backend services use. The plain token is only ever in the link, the form and the
update it sends.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import structlog
from babel.dates import format_timedelta
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from partnerflow.activities.i18n import NAMES, SUPPORTED, accepted, choose, of_country, translations, when
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
from partnerflow.states.declaration import N_
from partnerflow.states.delegated_admin import DELEGATED_ADMIN, ROLE_WORDS
from partnerflow.states.delegated_admin_models import ApproveRequest, DeclineRequest, DelegatedAdminView
from partnerflow.states.errors import problems
from partnerflow.states.lifecycles import LIFECYCLES
from partnerflow.states.models import (
    AcceptInvitation,
    AdminRole,
    Cloud,
    CustomerAdmin,
    DeclineInvitation,
    InvitationStatus,
    InvitationView,
)

log = structlog.get_logger("partnerflow.portal")
HERE = Path(__file__).resolve().parent
_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
#: By page (a lifecycle's token query): the workflow ids it serves, its declared id format with
#: each `{id}` an identifier.
_WORKFLOW_ID = {
    lc.token_query: re.compile(re.sub(r"\\{\w+\\}", lambda _: _ID, re.escape(lc.workflow_id)))
    for lc in LIFECYCLES.values()
    if lc.token_query
}
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,200}")

# Every text the page shows: English msgids, in the reader's language at render time.
NOT_VALID = (
    N_("This invitation link is not valid"),
    N_("The link may be incomplete or mistyped. Ask your partner to send you a new invitation."),
)
NO_LONGER_VALID = (N_("This invitation is no longer valid"), N_("Ask your partner for a new invitation."))
TOO_MANY = (N_("Too many attempts"), N_("Wait a few minutes, then open the link from your email again."))
FORM_EXPIRED = (N_("This form has expired"), N_("Open the link from your email again."))
NOT_CONFIRMED = (
    N_("We could not confirm your answer"),
    N_(
        "It may or may not have been saved. Open the link from your email again in a few"
        " minutes: the page will show whether your answer was taken."
    ),
)
BUSY = (N_("Please try again in a few minutes"), N_("The service is busy or down. Nothing was changed."))
REFUSED = (N_("This request could not be completed"), N_("Nothing was changed. Ask your partner for help."))
BROKEN = (N_("Something went wrong"), N_("Nothing was changed. Please try again later."))
NOTHING_HERE = (N_("Nothing here"), N_("Open the invitation link from your email."))
TICK_THE_BOX = N_("Tick the box to accept the customer agreement first.")
PLEASE_CHECK = N_("Please check: {fields}.")
# The approval page's own words where the invitation's would not fit.
APPROVAL_NOT_VALID = (
    N_("This approval link is not valid"),
    N_("The link may be incomplete or mistyped. Ask your partner to send you a new request."),
)
APPROVAL_NO_LONGER_VALID = (N_("This request is no longer valid"), N_("Ask your partner for a new request."))
APPROVAL_SPENT: dict[InvitationStatus, tuple[str, str]] = {
    InvitationStatus.ACCEPTED: (
        N_("This request has already been answered"),
        N_("It was approved: the partner has the roles it asked for. Nothing more to do here."),
    ),
    InvitationStatus.DECLINED: (
        N_("This request has already been answered"),
        N_("It was declined. If that was a mistake, ask your partner for a new request."),
    ),
    InvitationStatus.REPLACED: (N_("This request is no longer valid"), N_("Ask your partner for a new request.")),
    InvitationStatus.CANCELLED: (
        N_("This request is no longer valid"),
        N_("Your partner withdrew it. Ask your partner for a new request if you still want one."),
    ),
    InvitationStatus.EXPIRED: (N_("This request has expired"), N_("Ask your partner to send you a new request.")),
}
SPENT: dict[InvitationStatus, tuple[str, str]] = {
    InvitationStatus.ACCEPTED: (
        N_("This invitation has already been used"),
        N_("It was accepted: the reseller relationship is in place. Nothing more to do here."),
    ),
    InvitationStatus.DECLINED: (
        N_("This invitation has already been used"),
        N_("It was declined. If that was a mistake, ask your partner for a new invitation."),
    ),
    InvitationStatus.REPLACED: (
        N_("This invitation is no longer valid"),
        N_("A newer invitation replaced it. Use the link in the latest email, or ask your partner for another."),
    ),
    InvitationStatus.CANCELLED: (
        N_("This invitation is no longer valid"),
        N_("Your partner cancelled it. Ask your partner for a new invitation if you still want one."),
    ),
    InvitationStatus.EXPIRED: (
        N_("This invitation has expired"),
        N_("Ask your partner to send you a new invitation."),
    ),
}

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # a company called <script> is shown as text
    undefined=jinja2.StrictUndefined,
)


def reader(request: Request, view: InvitationView | None = None) -> str:
    """The reader's language: their choice on the page (`lang`), the one the start gave, their
    browser's (Accept-Language), their country's; else English."""
    chosen = request.query_params.get("lang") or request.scope.get("state", {}).get("lang")
    locale, country = (view.locale, view.country) if view else (None, None)
    return choose(chosen, locale, accepted(request.headers.get("accept-language")), of_country(country))


def render(name: str, language: str, status: int = 200, **context: Any) -> HTMLResponse:
    gettext = translations(language).gettext
    context = {"languages": [], **context}
    page = templates.get_template(name).render(language=language, _=gettext, **context)
    return HTMLResponse(page, status_code=status, headers={"Content-Language": language, "Vary": "Accept-Language"})


def problem(request: Request, status: int, texts: tuple[str, str]) -> HTMLResponse:
    language = reader(request)
    gettext = translations(language).gettext
    return render("problem.html", language, status, title=gettext(texts[0]), text=gettext(texts[1]))


def switch(request: Request) -> list[dict[str, str]]:
    """The same page in each language: its own query, with `lang` set."""
    query = {k: v for k, v in request.query_params.items() if k != "lang"}
    return [{"code": code, "name": NAMES[code], "href": "?" + urlencode({**query, "lang": code})} for code in SUPPORTED]


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

    async def _lookup(
        self, request: Request, wid: str, token: str, page: str = "invitation"
    ) -> tuple[Cloud, InvitationView] | HTMLResponse:
        """The live invitation (or approval request: `page`), or the page that explains why there
        is none; every outcome takes at least `min_answer_ms`, so timing does not tell a known
        relationship apart."""
        began = time.monotonic()
        found = await self._find(request, wid, token, page)
        await asyncio.sleep(max(0.0, self.settings.min_answer_ms / 1000 - (time.monotonic() - began)))
        return found

    async def _find(
        self, request: Request, wid: str, token: str, page: str
    ) -> tuple[Cloud, InvitationView] | HTMLResponse:
        client = self._client(request)
        not_valid, spent = (NOT_VALID, SPENT) if page == "invitation" else (APPROVAL_NOT_VALID, APPROVAL_SPENT)
        if self.limiter.blocked(client):
            return problem(request, 429, TOO_MANY)
        if not _WORKFLOW_ID[page].fullmatch(wid) or not _TOKEN.fullmatch(token):
            self.limiter.miss(client)
            return problem(request, 404, not_valid)
        cloud, view = await self.relationships.find_invitation(wid, token)
        if cloud is not None and view.status is InvitationStatus.VALID:
            return cloud, view
        if view.status is InvitationStatus.UNKNOWN:
            self.limiter.miss(client)
            return problem(request, 404, not_valid)
        return problem(request, 410, spent[view.status])

    def _form(
        self,
        request: Request,
        view: InvitationView,
        wid: str,
        token: str,
        status: int = 200,
        error: tuple[str, dict[str, str]] | None = None,
        page: str = "invitation",
        **details: Any,
    ) -> Response:
        visitor = request.cookies.get(CSRF_COOKIE) or Csrf.new_visitor()
        csrf = self.csrf.token(visitor, wid)
        language = reader(request, view)
        gettext = translations(language).gettext
        if page == "invitation":
            details.setdefault("carried", None)
        response = render(
            f"{page}.html",
            language,
            status,
            **details,
            view=view,
            relationship=wid,
            token=token,
            csrf=csrf,
            error=gettext(error[0]).format(**error[1]) if error else "",
            expires=when(view.expires_at, language, view.country) if view.expires_at else "—",
            languages=switch(request) if request.method == "GET" else [],
        )
        response.set_cookie(
            CSRF_COOKIE,
            visitor,
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
            path=f"/{page}",
        )
        return response

    # --- routes ------------------------------------------------------------------
    async def _carried(self, request: Request, cloud: Cloud, wid: str, view: InvitationView) -> Any:
        """The delegated admin request the invitation carries, while it waits for this answer:
        its roles in plain words (the reader's language), else None."""
        relationship = await self.relationships.view(cloud, wid)
        if not relationship.admin_request:
            return None
        partner_id, customer_id = wid.split("/")[1:3]
        carried_id = DELEGATED_ADMIN.workflow_id.format(
            partner_id=partner_id, customer_id=customer_id, request_id=relationship.admin_request
        )
        try:
            request_view: DelegatedAdminView = await self.relationships.view(cloud, carried_id)
        except NotFound:
            return None
        if request_view.state != "approvalPending":
            return None
        language = reader(request, view)
        gettext = translations(language).gettext
        return {
            "view": request_view,
            "roles": [(role, gettext(ROLE_WORDS[AdminRole(role)])) for role in request_view.roles],
            "days": format_timedelta(request_view.duration, threshold=10_000, granularity="day", locale=language),
            "renews": bool(request_view.auto_extend),
        }

    async def _again(
        self,
        request: Request,
        cloud: Cloud,
        view: InvitationView,
        wid: str,
        token: str,
        error: tuple[str, dict[str, str]],
    ) -> Response:
        """The invitation page once more (400), saying what to fix."""
        carried = await self._carried(request, cloud, wid, view)
        return self._form(request, view, wid, token, 400, error, carried=carried)

    async def show(self, request: Request) -> Response:
        wid = request.query_params.get("relationship", "")
        token = request.query_params.get("token", "")
        found = await self._lookup(request, wid, token)
        if isinstance(found, HTMLResponse):
            return found
        carried = await self._carried(request, found[0], wid, found[1])
        return self._form(request, found[1], wid, token, carried=carried)

    async def answer(self, request: Request) -> Response:
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        request.scope.setdefault("state", {})["lang"] = fields.get("lang")  # the language it was shown in
        wid, token = fields.get("relationship", ""), fields.get("token", "")
        if not self.csrf.ok(request.cookies.get(CSRF_COOKIE), wid, fields.get("csrf")):
            return problem(request, 403, FORM_EXPIRED)
        found = await self._lookup(request, wid, token)
        if isinstance(found, HTMLResponse):
            return found
        cloud, view = found
        accepting = request.url.path.endswith("/accept")
        carried = await self._carried(request, cloud, wid, view)  # answered with the invitation
        name = fields.get("admin_name", "").strip() or (view.admin_email or "")
        try:
            admin = CustomerAdmin(user=name, email=view.admin_email or "")
            if accepting:
                if fields.get("agreement") != "yes":
                    return await self._again(request, cloud, view, wid, token, (TICK_THE_BOX, {}))
                accept = AcceptInvitation(token=token, customer_admin=admin, accept_agreement=True)
                await self.relationships.accept_invitation(cloud, wid, accept)
            else:
                reason = fields.get("reason", "")
                decline = DeclineInvitation(token=token, customer_admin=admin, reason=reason)
                await self.relationships.decline_invitation(cloud, wid, decline)
        except ValidationError as error:
            where = ", ".join(p["field"] for p in problems(error))
            return await self._again(request, cloud, view, wid, token, (PLEASE_CHECK, {"fields": where}))
        except (GuardFailed, TransitionNotAllowed, NotFound):
            return problem(request, 410, NO_LONGER_VALID)
        except InvalidInput as error:
            named = {"fields": error.rule or "input"}
            return await self._again(request, cloud, view, wid, token, (PLEASE_CHECK, named))
        language = reader(request, view)
        return render("done.html", language, view=view, accepted=accepting, carried=carried)

    # --- the approval page (a delegated admin relationship) -------------------------
    async def _approval_form(
        self,
        request: Request,
        found: tuple[Cloud, InvitationView],
        wid: str,
        token: str,
        status: int = 200,
        error: tuple[str, dict[str, str]] | None = None,
    ) -> Response:
        """The request in plain words: the roles (each explained), how long, whether it renews
        itself. Read from the workflow's view once the token has proven the reader."""
        cloud, view = found
        request_view: DelegatedAdminView = await self.relationships.view(cloud, wid)
        language = reader(request, view)
        gettext = translations(language).gettext
        roles = [(role, gettext(ROLE_WORDS[AdminRole(role)])) for role in request_view.roles]
        return self._form(
            request,
            view,
            wid,
            token,
            status,
            error,
            page="approval",
            request_view=request_view,
            roles=roles,
            # In days, as the reader counts them ("730 Tage"): Babel's words, no catalog needed.
            days=format_timedelta(request_view.duration, threshold=10_000, granularity="day", locale=language),
            renews=bool(request_view.auto_extend),
        )

    async def show_approval(self, request: Request) -> Response:
        wid = request.query_params.get("relationship", "")
        token = request.query_params.get("token", "")
        found = await self._lookup(request, wid, token, "approval")
        if isinstance(found, HTMLResponse):
            return found
        return await self._approval_form(request, found, wid, token)

    async def answer_approval(self, request: Request) -> Response:
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        request.scope.setdefault("state", {})["lang"] = fields.get("lang")
        wid, token = fields.get("relationship", ""), fields.get("token", "")
        if not self.csrf.ok(request.cookies.get(CSRF_COOKIE), wid, fields.get("csrf")):
            return problem(request, 403, FORM_EXPIRED)
        found = await self._lookup(request, wid, token, "approval")
        if isinstance(found, HTMLResponse):
            return found
        cloud, view = found
        approving = request.url.path.endswith("/approve")
        name = fields.get("admin_name", "").strip() or (view.admin_email or "")
        try:
            admin = CustomerAdmin(user=name, email=view.admin_email or "")
            if approving:
                approve = ApproveRequest(token=token, customer_admin=admin)
                await self.relationships.update(cloud, wid, "approve", approve)
            else:
                decline = DeclineRequest(token=token, customer_admin=admin, reason=fields.get("reason", ""))
                await self.relationships.update(cloud, wid, "decline", decline)
        except ValidationError as error:
            where = ", ".join(p["field"] for p in problems(error))
            return await self._approval_form(request, found, wid, token, 400, (PLEASE_CHECK, {"fields": where}))
        except (GuardFailed, TransitionNotAllowed, NotFound):
            return problem(request, 410, APPROVAL_NO_LONGER_VALID)
        except InvalidInput as error:
            fields_named = {"fields": error.rule or "input"}
            return await self._approval_form(request, found, wid, token, 400, (PLEASE_CHECK, fields_named))
        return render("approval_done.html", reader(request, view), view=view, approved=approving)


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
                return problem(request, 503, NOT_CONFIRMED)
            return problem(request, 503, BUSY)
        except RelationshipError as error:
            log.warning("portal.refused", error=error.type, rule=error.rule, cause=_cause(error))
            return problem(request, 400, REFUSED)
        except Exception as error:  # the page must never show a stack trace
            log.error("portal.error", error=type(error).__name__)  # no message: it could quote the input
            return problem(request, 500, BROKEN)

    return run


async def _home(request: Request) -> Response:
    return problem(request, 404, NOTHING_HERE)


def create_app(relationships: Relationships, settings: PortalSettings | None = None) -> Any:
    portal = Portal(relationships, settings or PortalSettings())
    app = Starlette(
        routes=[
            Route("/", _home),
            Route("/invitation", guarded(portal.show), methods=["GET"]),
            Route("/invitation/accept", guarded(portal.answer), methods=["POST"]),
            Route("/invitation/decline", guarded(portal.answer), methods=["POST"]),
            Route("/approval", guarded(portal.show_approval), methods=["GET"]),
            Route("/approval/approve", guarded(portal.answer_approval), methods=["POST"]),
            Route("/approval/decline", guarded(portal.answer_approval), methods=["POST"]),
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
