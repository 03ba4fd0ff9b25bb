"""The one home of partnerflow's public names (CONTRACT.md): where, how it is found, how it refuses.

A lifecycle's own names (workflow type, id format, state attribute) live in its declaration.
"""

from __future__ import annotations

from enum import StrEnum

from partnerflow.states.models import Cloud

#: The instrumentation name of partnerflow's own spans (runtime.tracing, the SMTP conversation).
TRACER = "partnerflow"

NAMESPACES: dict[Cloud, str] = {Cloud.PUBLIC: "relationships", Cloud.USGOV: "relationships-usgov"}
TASK_QUEUE = "relationships"


class ErrorType(StrEnum):
    """The `type` of every refusal: callers in any language branch on it, never on the message."""

    INVALID_INPUT = "InvalidInput"  # a payload's shape: names the field and the rule
    INVALID_START = "InvalidStart"  # a start that cannot be this workflow's (id, namespace, continued)
    PERMISSION_DENIED = "PermissionDenied"  # the actor may not (role, partner, kind, cloud)
    TRANSITION_NOT_ALLOWED = "TransitionNotAllowed"  # not from the current state
    GUARD_FAILED = "GuardFailed"  # a named rule of the row does not hold
    CLOUD_ISOLATION = "CloudIsolation"  # an activity of one cloud asked to touch another's rows
    NOT_FOUND = "NotFound"  # client side: no such relationship
    UNAVAILABLE = "Unavailable"  # client side: Temporal cannot be reached; nothing changed


#: Custom search attributes and their kinds: ids, states and deadlines only, never personal data.
SEARCH_ATTRIBUTES: dict[str, str] = {
    "RelationshipState": "Keyword",
    "PartnerId": "Keyword",
    "CustomerId": "Keyword",
    "Cloud": "Keyword",
    "InvitationExpiresAt": "Datetime",  # the latest invitation's deadline: "about to lapse"
    "StateChangedAt": "Datetime",  # when the state last changed: "ended this month"
    "DeliveryState": "Keyword",  # a webhook's: idle | delivering (since StateChangedAt)
    "DelegatedAdminState": "Keyword",  # a delegated admin relationship's state
    "AdminAccessEndsAt": "Datetime",  # when its term ends (active, expiring): "expiring in 30 days"
}
PARTNER_ID, CUSTOMER_ID, CLOUD, STATE_CHANGED_AT = "PartnerId", "CustomerId", "Cloud", "StateChangedAt"
DELIVERY_STATE = "DeliveryState"
#: A webhook's delivery workflow: its type, and its id (`webhook/<webhook id>`).
WEBHOOK_TYPE = "Webhook"
WEBHOOK_ID = "webhook/{webhook_id}"
