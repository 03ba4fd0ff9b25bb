"""What the interpreter asks of the activities: generic capabilities, each a typed reference.

A `Capability` binds an activity's name to its argument and result types, so the
workflow's call and the activity's registration name one object: a rename or a type
change fails at both call sites under mypy, not in a test run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, JsonValue, model_validator

from partnerflow.states.models import Partner

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R")


@dataclass(frozen=True)
class Capability(Generic[A, R]):
    name: str
    arg: type[A]
    result: type[R]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True)


class SendLetter(_Message):
    """Send one declared letter once (by `key`); with `token`, it carries a new link token."""

    key: str  # idempotency key: one email per key, ever
    lifecycle: str
    letter: str
    workflow_id: str
    to: str  # "" with `to_partner`
    partner_name: str
    company: str
    expires_at: datetime | None = None
    reason: str = ""
    token: bool = False
    # To this partner's contact in the `cloud` partner registry, looked up when sent (a notice
    # to an indirect provider: its address is the registry's, and never enters the history).
    to_partner: str | None = None
    cloud: str | None = None
    # The reader's language (a BCP 47 tag) and country (its date format's time zone); unset:
    # from the country, else English. A notice to `to_partner` is in that partner's language.
    locale: str | None = None
    country: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_v2(cls, value: Any) -> Any:
        """A letter scheduled by the workflow before the engine (its `Invitation` or `Notice`)."""
        if not isinstance(value, dict) or "letter" in value:
            return value
        v = dict(value)
        kind = v.pop("kind", None)
        again = v.pop("reinstatement", False)
        v["lifecycle"] = "relationship"
        v["letter"] = kind or ("reinstatement" if again else "invitation")
        v["token"] = kind is None
        return v


class IssuedToken(_Message):
    """What the workflow learns of a sent letter: the link token's hash, never the token."""

    message_id: str
    token_sha256: str | None = None


class Audited(_Message):
    """What the audit says of one change: the workflow's tail and the records keep the same."""

    operation: str
    actor_user: str
    actor_role: str
    from_state: str | None
    to_state: str
    at: datetime
    reason: str = ""


class Change(Audited):
    """One transition to record: the audit row and the lifecycle's current row it implies."""

    change_id: str  # unique per change of one lifecycle: the idempotency key
    table: str = "customers"
    cloud: str
    partner_id: str
    customer_id: str
    workflow_id: str
    company: str
    fields: dict[str, JsonValue] = {}
    lifecycle: str = "relationship"
    event: str | None = None  # its event's type, recorded in the event log with it (none: before events)
    # The row's letters, queued in the change's own transaction for the worker's relay to send
    # (none: a change from before letters went with it; those went as `send_notice` activities).
    letters: list[SendLetter] = []
    # The change ends the live link (a cancellation, an expiry): an unsent link letter is dropped.
    voids_link: bool = False
    # Lifecycles the row cascades to: the answer names this customer's open ones
    # (`RECORD_AND_FIND`), where a `related_workflows` activity of its own used to.
    find: list[str] = []


class ReadFact(_Message):
    """A named fact a guard needs from the records (the billing feed's counts)."""

    fact: str = ""  # set by the activity from its name (`count_<fact>`) when a caller left it out
    cloud: str
    partner_id: str
    customer_id: str


class Counted(_Message):
    """A guard's outside fact: how many, and of what (the billing feed's detail), for the
    refusal's words. A history from before the detail holds a bare count, read the same."""

    count: int
    detail: dict[str, int] = {}


class Admit(_Message):
    """A start to admit: its partners must be in the registry, its actor proven by `proof`."""

    cloud: str
    workflow_id: str
    run_id: str  # the first run of the chain: a reset run of this start is the same admission
    requested_at: datetime  # when the start was made: the proof must be fresh then, however late admitted
    action: str
    partner_id: str
    referred_by: str | None = None
    actor_user: str
    actor_role: str
    actor_partner_id: str
    proof: str | None = None


class Admission(_Message):
    """The registry's partner for an admitted start; else the rule and the words that refuse it."""

    partner: Partner | None = None
    rule: str | None = None
    message: str | None = None
    jti: str | None = None  # the start's assertion, spent: the workflow remembers it
    expires_at: datetime | None = None


# The activities' names are what the workflow called them before the engine, derived now
# instead of written: a running relationship replays the very same commands, with no patch
# (a patch adds two events to every history), and an activity it scheduled before a deploy
# finds a worker.


#: A letter without a link (a notice, a reminder): answers its Message-ID.
class WebhookStart(_Message):
    """A webhook's delivery workflow: its events after `after`, in order, each retried for
    `retry_window` (then a dead letter), waits growing to `max_interval`."""

    webhook_id: str
    cloud: str
    partner_id: str
    after: int = 0
    retry_window: timedelta = timedelta(days=3)
    max_interval: timedelta = timedelta(hours=1)


class NextEvents(_Message):
    webhook_id: str
    after: int
    wait_s: float = 60.0  # answers at once when there are events, else after this long


class EventRef(_Message):
    """An event by its place in the log: its data stays in the records, out of the history."""

    seq: int
    event_id: str
    type: str


class EventBatch(_Message):
    events: list[EventRef] = []
    last_seq: int  # the cursor after this batch (events the webhook does not want included)
    removed: bool = False  # the webhook was removed: its workflow ends


class Deliver(_Message):
    webhook_id: str
    seq: int
    event_id: str


class DeadLetter(_Message):
    webhook_id: str
    seq: int
    event_id: str
    attempts: int
    error: str  # the last failure's kind, never a body


class Related(_Message):
    """Which open lifecycles of `lifecycle` a cascade reaches: the same cloud, partner and customer."""

    lifecycle: str
    cloud: str
    partner_id: str
    customer_id: str


class Found(_Message):
    workflow_ids: list[str] = []


class Recorded(_Message):
    """A change recorded (False: a retry found it recorded), and the open lifecycles of this
    customer that its `find` named, by lifecycle."""

    recorded: bool
    related: dict[str, list[str]] = {}


SEND_NOTICE: Capability[SendLetter, str] = Capability("send_notice", SendLetter, str)
RECORD_CHANGE: Capability[Change, bool] = Capability("record_change", Change, bool)
#: A change whose row sends a new link: the link letter goes with it (one of its `letters`),
#: and the answer is the link token's hash, as `send_<page>` answers it.
RECORD_WITH_LINK: Capability[Change, IssuedToken] = Capability("record_change_with_link", Change, IssuedToken)
RELATED: Capability[Related, Found] = Capability("related_workflows", Related, Found)
#: A change whose row cascades, with the lookup of the lifecycles it reaches (`Change.find`):
#: one local activity where `record_change` and `related_workflows` were two.
RECORD_AND_FIND: Capability[Change, Recorded] = Capability("record_change_and_find", Change, Recorded)
#: The signal a cascade sends: the trigger (an `Upstream` row) to fire.
CASCADE_SIGNAL = "cascade"
#: A start's admission: the partner registry's facts and the proof of its actor, recorded once.
ADMIT: Capability[Admit, Admission] = Capability("admit_start", Admit, Admission)


#: Webhook delivery (workflows/webhook.py): the next events, one delivery, a dead letter.
NEXT_EVENTS: Capability[NextEvents, EventBatch] = Capability("next_events", NextEvents, EventBatch)
DELIVER_EVENT: Capability[Deliver, int] = Capability("deliver_event", Deliver, int)
DEAD_LETTER: Capability[DeadLetter, bool] = Capability("dead_letter", DeadLetter, bool)


def send_link(token_query: str) -> Capability[SendLetter, IssuedToken]:
    """A letter that carries a new link to a lifecycle's page, named after the page's query
    (`send_invitation` for the relationship): answers the token's hash."""
    return Capability(f"send_{token_query}", SendLetter, IssuedToken)


def read_fact(fact: str) -> Capability[ReadFact, Counted | int]:
    """A guard's outside fact, a count the records keep (`count_active_subscriptions`); a bare
    `int` in a history recorded before the count carried its detail."""
    return Capability(f"count_{fact}", ReadFact, Counted | int)  # type: ignore[arg-type]
