"""What each letter of the relationship lifecycle says: (subject, body) from the letter's facts.

Plain text: names cannot smuggle markup. Every name in a subject or body comes from
the start input, which refuses line breaks and control characters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from states.declaration import LetterFacts

Text = Callable[[LetterFacts], tuple[str, str]]


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "soon"


def _reason(f: LetterFacts) -> str:
    return f"\nReason given: {f.reason}\n" if f.reason else ""


def _invitation(f: LetterFacts, again: str) -> tuple[str, str]:
    return (
        f"{f.partner_name} invites {f.company} to a reseller relationship",
        f"Hello,\n\n"
        f"{f.partner_name} asks to become{again} the cloud reseller of {f.company}.\n\n"
        f"As the global admin of {f.company}, open this link to read the request,\n"
        f"accept the customer agreement and accept or decline:\n\n"
        f"{f.link}\n\n"
        f"The link works once and expires on {when(f.expires_at)}.\n"
        f"If you did not expect this email, you can ignore it.\n",
    )


def invitation(f: LetterFacts) -> tuple[str, str]:
    return _invitation(f, "")


def reinstatement(f: LetterFacts) -> tuple[str, str]:
    return _invitation(f, " again")


def reminder(f: LetterFacts) -> tuple[str, str]:
    return (
        f"Reminder: {f.partner_name}'s invitation to {f.company} expires {when(f.expires_at)}",
        f"The invitation from {f.partner_name} to {f.company} is still waiting for the\n"
        f"customer's global admin. It expires on {when(f.expires_at)}.\n\n"
        f"Use the link in the original invitation email; for security this reminder\n"
        f"does not repeat it. Ask {f.partner_name} to send a new one if it is lost.\n",
    )


def partner_accepted(f: LetterFacts) -> tuple[str, str]:
    return (
        f"{f.company} accepted your reseller relationship",
        f"{f.company} accepted the invitation from {f.partner_name}.\n"
        "The customer now appears in your customer list.\n",
    )


def partner_expired(f: LetterFacts) -> tuple[str, str]:
    return (
        f"Your invitation to {f.company} expired",
        f"{f.company} did not answer the invitation from {f.partner_name} in time.\n"
        f"Send it again (resend_invitation) or cancel it.\n",
    )


def referrer_declined(f: LetterFacts) -> tuple[str, str]:
    return (
        f"{f.partner_name} declined the referral of {f.company}",
        f"{f.partner_name} declined the referral of {f.company}.\n{_reason(f)}",
    )


def referrer_expired(f: LetterFacts) -> tuple[str, str]:
    return (
        f"The referral of {f.company} to {f.partner_name} expired",
        f"{f.partner_name} neither accepted nor declined the referral of {f.company}\nin time, so it has expired.\n",
    )


def customer_ended(f: LetterFacts) -> tuple[str, str]:
    return (
        f"{f.partner_name} ended its reseller relationship with {f.company}",
        f"{f.partner_name} is no longer the reseller of {f.company}.\n{_reason(f)}",
    )


def partner_removed(f: LetterFacts) -> tuple[str, str]:
    return (
        f"{f.company} removed {f.partner_name} as its reseller",
        f"The global admin of {f.company} ended the reseller relationship with\n"
        f"{f.partner_name}. The customer has left your customer list.\n{_reason(f)}",
    )


#: Every letter by name: a row's `Send(letter=...)` names one of these.
LETTERS: dict[str, Text] = {
    "invitation": invitation,
    "reinstatement": reinstatement,
    "reminder": reminder,
    "partner_accepted": partner_accepted,
    "partner_expired": partner_expired,
    "referrer_declined": referrer_declined,
    "referrer_expired": referrer_expired,
    "customer_ended": customer_ended,
    "partner_removed": partner_removed,
}
