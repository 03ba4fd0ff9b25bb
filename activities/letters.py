"""What each email says. Pure functions: easy to read, easy to test."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict

from activities.email import Letter


class NoticeKind(StrEnum):
    REMINDER = "reminder"
    PARTNER_ACCEPTED = "partner_accepted"
    PARTNER_EXPIRED = "partner_expired"
    REFERRER_DECLINED = "referrer_declined"
    REFERRER_EXPIRED = "referrer_expired"
    CUSTOMER_ENDED = "customer_ended"
    PARTNER_REMOVED = "partner_removed"


class Notice(BaseModel):
    """An email that carries no secret: reminders and notices."""

    model_config = ConfigDict(frozen=True)

    key: str  # idempotency key: one email per key, ever
    kind: NoticeKind
    workflow_id: str
    to: str
    partner_name: str
    company: str
    expires_at: datetime | None = None
    reason: str = ""


class Invitation(BaseModel):
    """The invitation email; its token is made by the activity, never passed in."""

    model_config = ConfigDict(frozen=True)

    key: str
    workflow_id: str
    to: str
    partner_name: str
    company: str
    expires_at: datetime
    reinstatement: bool = False


def invitation_link(base_url: str, workflow_id: str, token: str) -> str:
    query = urlencode({"relationship": workflow_id, "token": token})
    return f"{base_url.rstrip('/')}/invitation?{query}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "soon"


def invitation_letter(invite: Invitation, link: str) -> Letter:
    again = " again" if invite.reinstatement else ""
    return Letter(
        to=invite.to,
        subject=f"{invite.partner_name} invites {invite.company} to a reseller relationship",
        body=(
            f"Hello,\n\n"
            f"{invite.partner_name} asks to become{again} the cloud reseller of {invite.company}.\n\n"
            f"As the global admin of {invite.company}, open this link to read the request,\n"
            f"accept the customer agreement and accept or decline:\n\n"
            f"{link}\n\n"
            f"The link works once and expires on {_when(invite.expires_at)}.\n"
            f"If you did not expect this email, you can ignore it.\n"
        ),
    )


def notice_letter(notice: Notice) -> Letter:
    n = notice
    reason = f"\nReason given: {n.reason}\n" if n.reason else ""
    texts: dict[NoticeKind, tuple[str, str]] = {
        NoticeKind.REMINDER: (
            f"Reminder: {n.partner_name}'s invitation to {n.company} expires {_when(n.expires_at)}",
            f"The invitation from {n.partner_name} to {n.company} is still waiting for the\n"
            f"customer's global admin. It expires on {_when(n.expires_at)}.\n\n"
            f"Use the link in the original invitation email; for security this reminder\n"
            f"does not repeat it. Ask {n.partner_name} to send a new one if it is lost.\n",
        ),
        NoticeKind.PARTNER_ACCEPTED: (
            f"{n.company} accepted your reseller relationship",
            f"{n.company} accepted the invitation from {n.partner_name}.\n"
            f"The customer now appears in your customer list.\n",
        ),
        NoticeKind.PARTNER_EXPIRED: (
            f"Your invitation to {n.company} expired",
            f"{n.company} did not answer the invitation from {n.partner_name} in time.\n"
            f"Send it again (resend_invitation) or cancel it.\n",
        ),
        NoticeKind.REFERRER_DECLINED: (
            f"{n.partner_name} declined the referral of {n.company}",
            f"{n.partner_name} declined the referral of {n.company}.\n{reason}",
        ),
        NoticeKind.REFERRER_EXPIRED: (
            f"The referral of {n.company} to {n.partner_name} expired",
            f"{n.partner_name} neither accepted nor declined the referral of {n.company}\n"
            f"in time, so it has expired.\n",
        ),
        NoticeKind.CUSTOMER_ENDED: (
            f"{n.partner_name} ended its reseller relationship with {n.company}",
            f"{n.partner_name} is no longer the reseller of {n.company}.\n{reason}",
        ),
        NoticeKind.PARTNER_REMOVED: (
            f"{n.company} removed {n.partner_name} as its reseller",
            f"The global admin of {n.company} ended the reseller relationship with\n"
            f"{n.partner_name}. The customer has left your customer list.\n{reason}",
        ),
    }
    subject, body = texts[n.kind]
    return Letter(to=n.to, subject=subject, body=body)
