"""What each letter of the delegated admin lifecycle says (the relationship's `Template`: plain
text over {partner_name}, {company}, {expires}, {reason_line}, {link}; English msgids)."""

from __future__ import annotations

from partnerflow.states.declaration import N_
from partnerflow.states.relationship_letters import Template

_REQUEST = N_(
    "Hello,\n\n"
    "{partner_name} asks for admin roles in the Microsoft tenant of {company}\n"
    "(a delegated admin relationship).\n\n"
    "As the global admin of {company}, open this link to read which roles,\n"
    "for how long, and to approve or decline:\n\n"
    "{link}\n\n"
    "The link works once and expires on {expires}.\n"
    "If you did not expect this email, you can ignore it.\n"
)

#: Every letter by name: a row's or a deadline's `Send(letter=...)` names one of these.
LETTERS: dict[str, Template] = {
    "approval_request": Template(N_("{partner_name} asks for admin roles in {company}"), _REQUEST),
    "approval_request_reminder": Template(
        N_("Reminder: {partner_name} asks for admin roles in {company}"),
        N_(
            "{partner_name} still waits for your answer to its request for admin roles\n"
            "in {company}. Use the link in the first email; it expires on {expires}.\n"
        ),
    ),
    "admin_approved": Template(
        N_("{company} approved your admin roles"),
        N_("{company} approved your delegated admin relationship: its roles are yours for its duration.\n"),
    ),
    "admin_declined": Template(
        N_("{company} declined your request for admin roles"),
        N_("{company} declined your delegated admin relationship.\n{reason_line}"),
    ),
    "admin_request_expired": Template(
        N_("Your request for admin roles in {company} expired"),
        N_(
            "{company} did not approve your delegated admin relationship in time,\n"
            "so the request has expired. You can ask again with a new request.\n"
        ),
    ),
    "admin_expiry_warning": Template(
        N_("The admin roles of {partner_name} in {company} end {expires}"),
        N_(
            "The delegated admin relationship that gives {partner_name} admin roles in\n"
            "{company} ends on {expires}, unless it renews itself as you approved.\n"
            "{partner_name} will ask you again if it still needs them.\n"
        ),
    ),
    "admin_partner_expiry_warning": Template(
        N_("Your admin roles in {company} end {expires}"),
        N_(
            "Your delegated admin relationship with {company} ends on {expires} unless it\n"
            "renews itself. Once expired it cannot be restored: re-issue it from the same roles\n"
            "(partnerflow gdap reissue) to ask again.\n"
        ),
    ),
    "admin_extended": Template(
        N_("The admin roles of {partner_name} in {company} were extended"),
        N_(
            "The delegated admin relationship that gives {partner_name} admin roles in {company}\n"
            "renewed itself for another 180 days, as approved when it began.\n"
        ),
    ),
    "admin_expired": Template(
        N_("The admin roles of {partner_name} in {company} have ended"),
        N_("The delegated admin relationship of {partner_name} with {company} has expired.\n"),
    ),
    "admin_partner_expired": Template(
        N_("Your admin roles in {company} have ended"),
        N_(
            "Your delegated admin relationship with {company} has expired and cannot be restored.\n"
            "Re-issue it from the same roles (partnerflow gdap reissue) to ask again.\n"
        ),
    ),
    "admin_terminated": Template(
        N_("The admin roles of {partner_name} in {company} were ended"),
        N_("The delegated admin relationship of {partner_name} with {company} was terminated.\n{reason_line}"),
    ),
    "admin_partner_terminated": Template(
        N_("Your admin roles in {company} were ended"),
        N_("Your delegated admin relationship with {company} was terminated.\n{reason_line}"),
    ),
}
