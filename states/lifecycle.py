"""The relationship lifecycle as data: one table of states and transitions.

Everything else (the `transitions` machine, update validators, the README
diagram and the tests) is derived from `TRANSITIONS`; change the lifecycle here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    REFERRED = "referred"
    REFERRAL_DECLINED = "referral_declined"
    REFERRAL_EXPIRED = "referral_expired"
    INVITED = "invited"
    INVITATION_EXPIRED = "invitation_expired"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    ENDED = "ended"


S = State

#: States with no way out: the workflow completes when it reaches one.
FINAL_STATES: frozenset[State] = frozenset({S.REFERRAL_DECLINED, S.REFERRAL_EXPIRED, S.DECLINED, S.CANCELLED})


@dataclass(frozen=True)
class Transition:
    """One row of the lifecycle: `trigger` moves `sources` → `dest` when every guard holds."""

    trigger: str
    sources: tuple[State, ...]
    dest: State
    operation: str  # audit operation name, in the reseller program's own style
    guards: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()  # side effects the workflow runs (emails)
    timer: bool = False  # fired by a durable timer, never by a caller


# fmt: off
TRANSITIONS: tuple[Transition, ...] = (
    #          trigger                    sources                           dest                 operation                            guards                                       effects
    Transition("accept_referral",         (S.REFERRED,),                    S.INVITED,           "UpdateReferral",                    (),                                          ("send_invitation",)),
    Transition("decline_referral",        (S.REFERRED,),                    S.REFERRAL_DECLINED, "UpdateReferral",                    (),                                          ("notify_referrer",)),
    Transition("expire_referral",         (S.REFERRED,),                    S.REFERRAL_EXPIRED,  "UpdateReferral",                    (),                                          ("notify_referrer",), timer=True),
    Transition("resend_invitation",       (S.INVITED, S.INVITATION_EXPIRED), S.INVITED,          "ResendCustomerInvitation",          (),                                          ("send_invitation",)),
    Transition("cancel_invitation",       (S.INVITED, S.INVITATION_EXPIRED), S.CANCELLED,        "CancelCustomerInvitation",          ()),
    Transition("expire_invitation",       (S.INVITED,),                     S.INVITATION_EXPIRED, "ExpireCustomerInvitation",         (),                                          ("notify_partner_expired",), timer=True),
    Transition("accept_invitation",       (S.INVITED,),                     S.ACTIVE,            "AddCustomer",                       ("token_is_valid", "agreement_accepted"),   ("notify_partner_accepted",)),
    Transition("decline_invitation",      (S.INVITED,),                     S.DECLINED,          "DeclineCustomerInvitation",         ("token_is_valid",)),
    Transition("set_purchase_permission", (S.ACTIVE,),                      S.ACTIVE,            "CreateSelfServePolicy",             ("grants_purchase",)),
    Transition("set_purchase_permission", (S.ACTIVE,),                      S.ACTIVE,            "DeleteSelfServePolicy",             ("revokes_purchase",)),
    Transition("end_relationship",        (S.ACTIVE,),                      S.ENDED,             "RemovePartnerCustomerRelationship", ("no_active_subscriptions",),               ("notify_customer_ended",)),
    Transition("remove_partner",          (S.ACTIVE,),                      S.ENDED,             "RemovePartnerCustomerRelationship", ("customer_matches",),                      ("notify_partner_removed",)),
    Transition("reinstate",               (S.ENDED,),                       S.INVITED,           "ReinstateCustomer",                 (),                                          ("send_invitation",)),
)
# fmt: on

#: How a relationship begins, by origin: (initial state, audit operation, effects).
STARTS: dict[str, tuple[State, str, tuple[str, ...]]] = {
    "invitation": (S.INVITED, "CreateCustomerInvitation", ("send_invitation",)),
    "referral": (S.REFERRED, "CreateReferral", ()),
}

#: Why a guard refuses, in words a caller can act on.
GUARD_RULES: dict[str, str] = {
    "token_is_valid": "token must be the live invitation token (it is wrong, used, replaced or expired)",
    "agreement_accepted": "accept_agreement must be true: the customer agreement has to be accepted",
    "grants_purchase": "allowed must change the purchase permission",
    "revokes_purchase": "allowed must change the purchase permission",
    "no_active_subscriptions": "the customer must have no active subscriptions before the relationship ends",
    "customer_matches": "customer_admin.customer_id must be this relationship's customer",
}

#: Guards that need outside data: the workflow fetches it before firing.
EXTERNAL_GUARDS: frozenset[str] = frozenset({"no_active_subscriptions"})

#: Triggers a caller may send (the Temporal updates), in table order.
UPDATES: tuple[str, ...] = tuple(dict.fromkeys(t.trigger for t in TRANSITIONS if not t.timer))


def rows_for(trigger: str) -> tuple[Transition, ...]:
    return tuple(t for t in TRANSITIONS if t.trigger == trigger)


def sources_of(trigger: str) -> tuple[State, ...]:
    return tuple(dict.fromkeys(s for t in rows_for(trigger) for s in t.sources))
