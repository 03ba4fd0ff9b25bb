"""What each letter of the relationship lifecycle says: a table of subject and body templates.

Plain text (the HTML part is made from it, escaped: activities/letters.py): names cannot
smuggle markup. Every name comes from the start input, which refuses line breaks and control
characters; `str.format_map` puts values in once and never reads a value as a template, so a
`{` in a company's name stays a `{`. The English texts are msgids: each reader gets them in
their language from the catalogs in `states/locales/` (English where one lacks a message).
"""

from __future__ import annotations

from dataclasses import dataclass

from partnerflow.states.declaration import N_, LetterFacts

REASON_LINE = N_("Reason given: {reason}")
SOON = N_("soon")  # a deadline not yet known


@dataclass(frozen=True)
class Template:
    """A letter's subject and body over {partner_name}, {company}, {expires}, {reason_line}, {link};
    English msgids, put in the reader's language by `facts.translate`."""

    subject: str
    body: str

    def __call__(self, f: LetterFacts) -> tuple[str, str]:
        values = {
            **vars(f),
            "expires": f.expires or f.translate(SOON),
            "reason_line": "\n" + f.translate(REASON_LINE).format_map({"reason": f.reason}) + "\n" if f.reason else "",
        }
        return f.translate(self.subject).format_map(values), f.translate(self.body).format_map(values)


_INVITATION_SUBJECT = N_("{partner_name} invites {company} to a reseller relationship")
_INVITATION = N_(
    "Hello,\n\n"
    "{partner_name} asks to become the cloud reseller of {company}.\n\n"
    "As the global admin of {company}, open this link to read the request,\n"
    "accept the customer agreement and accept or decline:\n\n"
    "{link}\n\n"
    "The link works once and expires on {expires}.\n"
    "If you did not expect this email, you can ignore it.\n"
)
_REINSTATEMENT = N_(
    "Hello,\n\n"
    "{partner_name} asks to become the cloud reseller of {company} again.\n\n"
    "As the global admin of {company}, open this link to read the request,\n"
    "accept the customer agreement and accept or decline:\n\n"
    "{link}\n\n"
    "The link works once and expires on {expires}.\n"
    "If you did not expect this email, you can ignore it.\n"
)

#: Every letter by name: a row's `Send(letter=...)` names one of these.
LETTERS: dict[str, Template] = {
    "invitation": Template(_INVITATION_SUBJECT, _INVITATION),
    "reinstatement": Template(_INVITATION_SUBJECT, _REINSTATEMENT),
    "reminder": Template(
        N_("Reminder: {partner_name}'s invitation to {company} expires {expires}"),
        N_(
            "The invitation from {partner_name} to {company} is still waiting for the\n"
            "customer's global admin. It expires on {expires}.\n\n"
            "Use the link in the original invitation email; for security this reminder\n"
            "does not repeat it. Ask {partner_name} to send a new one if it is lost.\n"
        ),
    ),
    "partner_accepted": Template(
        N_("{company} accepted your reseller relationship"),
        N_("{company} accepted the invitation from {partner_name}.\nThe customer now appears in your customer list.\n"),
    ),
    "partner_expired": Template(
        N_("Your invitation to {company} expired"),
        N_(
            "{company} did not answer the invitation from {partner_name} in time.\n"
            "Send it again (resend_invitation) or cancel it.\n"
        ),
    ),
    "referrer_declined": Template(
        N_("{partner_name} declined the referral of {company}"),
        N_("{partner_name} declined the referral of {company}.\n{reason_line}"),
    ),
    "referrer_expired": Template(
        N_("The referral of {company} to {partner_name} expired"),
        N_("{partner_name} neither accepted nor declined the referral of {company}\nin time, so it has expired.\n"),
    ),
    "customer_ended": Template(
        N_("{partner_name} ended its reseller relationship with {company}"),
        N_("{partner_name} is no longer the reseller of {company}.\n{reason_line}"),
    ),
    "partner_removed": Template(
        N_("{company} removed {partner_name} as its reseller"),
        N_(
            "The global admin of {company} ended the reseller relationship with\n"
            "{partner_name}. The customer has left your customer list.\n{reason_line}"
        ),
    ),
    "provider_accepted": Template(
        N_("{company} accepted {partner_name} as its reseller"),
        N_(
            "{company} accepted the invitation from {partner_name}, which resells\n"
            "through you. The customer now appears in your customer list too.\n"
        ),
    ),
    "customer_suspended": Template(
        N_("{partner_name} suspended its reseller relationship with {company}"),
        N_(
            "{partner_name} suspended its reseller relationship with {company}.\n"
            "Nothing new can be bought through {partner_name} until it is resumed.\n{reason_line}\n"
            "Unless it is resumed, the relationship ends on {expires}.\n"
        ),
    ),
    "customer_resumed": Template(
        N_("{partner_name} resumed its reseller relationship with {company}"),
        N_("{partner_name} resumed its reseller relationship with {company}.\n"),
    ),
    "suspension_warning": Template(
        N_("The suspended relationship of {company} with {partner_name} ends {expires}"),
        N_(
            "The reseller relationship of {company} with {partner_name} is suspended.\n"
            "Unless {partner_name} resumes it, it ends on {expires}.\n"
        ),
    ),
    "partner_suspension_warning": Template(
        N_("Your suspended relationship with {company} ends {expires}"),
        N_(
            "Your reseller relationship with {company} is suspended. Unless you resume it\n"
            "(resume), it ends on {expires} and the customer leaves your customer list.\n"
        ),
    ),
    "partner_suspension_ended": Template(
        N_("Your suspended relationship with {company} has ended"),
        N_(
            "Your reseller relationship with {company} was suspended and not resumed in\n"
            "time, so it has ended. The customer has left your customer list.\n"
        ),
    ),
}
