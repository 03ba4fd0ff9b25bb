"""The vocabulary a lifecycle is declared in: rows that say everything they mean.

A row names its trigger, the states it leaves and enters, who may fire it, the guards
that must hold (with the rule's words) and its typed effects. A lifecycle adds the
commands callers send, the deadlines its states keep, its record fields and its letters.
The interpreter (`workflows/`), the activities, the docs, the CLI and the tests read
these objects; none of them knows a trigger, a state or an effect by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, JsonValue
from pydantic_core import to_jsonable_python

from partnerflow.states.models import Cloud, InvitationStatus, PartnerKind, Role

# --- who may fire a row -------------------------------------------------------------


Whose = Literal["partner", "referrer", "provider"]
#: Each partner a row may be fired by, in words (the denials' and the docs').
WHOSE: Mapping[str, str] = {
    "partner": "the relationship's partner",
    "referrer": "the referring partner",
    "provider": "its indirect provider",
}


@dataclass(frozen=True)
class PartnerStaff:
    """Partner users in `roles` of one of the partners `of` names: the relationship's partner,
    the referring one, or the indirect provider of the relationship's (indirect reseller)
    partner. `kinds_denied`: kinds of the relationship's partner whose own staff may not."""

    roles: frozenset[Role]
    of: tuple[Whose, ...] | Whose = ("partner",)  # one name is read as a tuple of it
    kinds_denied: frozenset[PartnerKind] = frozenset()
    clouds_denied: frozenset[Cloud] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.of, str):
            object.__setattr__(self, "of", (self.of,))

    @property
    def whose(self) -> tuple[Whose, ...]:
        return self.of if isinstance(self.of, tuple) else (self.of,)


@dataclass(frozen=True)
class CustomerAdmin:
    """The customer's global admin: proven by the live link token, or by the customer portal."""

    proof: Literal["token", "portal"]


@dataclass(frozen=True)
class Timer:
    """partnerflow itself, when a deadline passes: never a caller."""


@dataclass(frozen=True)
class Upstream:
    """partnerflow itself, when a change of another lifecycle of the same partner and customer
    says so (its row's `Cascade`): never a caller."""


By = PartnerStaff | CustomerAdmin | Timer | Upstream

# --- guards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a guard may read: the command, the record fields, and what the engine knows."""

    command: Any
    fields: Mapping[str, Any]
    customer_id: str
    token_is_live: bool = False  # the command carries the live, unclaimed, unexpired token
    fact: int | None = None  # the outside fact the guard `needs`, once the worker has read it
    fact_detail: Mapping[str, int] = field(default_factory=dict)  # of what, where the records say


@dataclass(frozen=True)
class Guard:
    """A named condition, the rule's words for a caller, and where an outside fact is needed."""

    name: str
    rule: str
    holds: Callable[[Facts], bool]
    needs: str | None = None  # a named fact the worker reads from the records first
    explain: Callable[[Facts], str] | None = None  # what blocks it, added to the rule's words

    def words(self, facts: Facts) -> str:
        return f"{self.rule}: {self.explain(facts)}" if self.explain else self.rule


# --- typed effects ----------------------------------------------------------------------


class Recipient(StrEnum):
    CUSTOMER_ADMIN = "customer_admin"  # the customer's global admin: the record field `admin_email`
    PARTNER_CONTACT = "partner_contact"  # the partner's contact address, else the user who sent the link
    REQUESTER = "requester"  # the partner user who started the lifecycle (a referral's referrer)
    PROVIDER_CONTACT = "provider_contact"  # an indirect reseller's provider (the registry's contact); else none


@dataclass(frozen=True)
class Send:
    """A letter to one recipient. `token`: it carries a new single-use link (the old one is replaced).

    `since` names the `workflow.patched` id under which the letter was added, so
    relationships that were running before it keep replaying their histories.
    """

    letter: str
    to: Recipient
    token: bool = False
    since: str | None = None


@dataclass(frozen=True)
class Set:
    """A record field takes a value."""

    field: str
    value: bool | int | str | None


@dataclass(frozen=True)
class Take:
    """A record field takes a value the caller gives: `path` in the command (a start row's: the
    start input), dotted. Nothing changes where the caller gave none."""

    field: str
    path: str

    def value(self, command: Any) -> Any:
        for name in self.path.split("."):
            command = getattr(command, name, None)
        return to_jsonable_python(command)  # a record holds JSON: enums and tuples as such


@dataclass(frozen=True)
class Until:
    """A record field takes a moment (ISO 8601): the length at `after` in the start input
    (dotted) past the change's time, or past the moment already in `since` (a field), so a
    term renewed late still ends where it would have."""

    field: str
    after: str
    since: str | None = None

    def moment(self, start: Any, fields: Mapping[str, Any], now: datetime) -> str:
        length: Any = start
        for name in self.after.split("."):
            length = getattr(length, name)
        base = fields.get(self.since) if self.since else None
        moment: datetime = (datetime.fromisoformat(base) if isinstance(base, str) else now) + length
        return moment.isoformat()


@dataclass(frozen=True)
class Keep:
    """A map field (one entry per key) keeps an entry: its key at `key` in the command, its
    attributes at the command paths `take` names, and `status`. What a lifecycle holds several
    of (a partner group's access), each with a status of its own."""

    field: str
    key: str
    take: tuple[tuple[str, str], ...] = ()  # (attribute, command path)
    status: str | None = None

    def entry(self, command: Any, current: Any) -> tuple[str, dict[str, Any]]:
        found = dict(current.get(str(Take(self.field, self.key).value(command)), {})) if current else {}
        found |= {name: Take(self.field, path).value(command) for name, path in self.take}
        if self.status is not None:
            found["status"] = self.status
        return str(Take(self.field, self.key).value(command)), found


@dataclass(frozen=True)
class Mark:
    """Every entry of a map field whose status is one of `among` (any, if empty) takes `status`."""

    field: str
    status: str
    among: tuple[str, ...] = ()

    def applied(self, current: Any) -> dict[str, Any]:
        return {
            key: {**entry, "status": self.status} if not self.among or entry.get("status") in self.among else entry
            for key, entry in (current or {}).items()
        }


@dataclass(frozen=True)
class Add:
    """A record field grows by `amount`, where the flag `if_set` (if given) is on."""

    field: str
    amount: int = 1
    if_set: str | None = None


@dataclass(frozen=True)
class VoidToken:
    """The live link token stops working, for this reason."""

    outcome: InvitationStatus


@dataclass(frozen=True)
class Publish:
    """The change's event, named in the program's style; `indirect`: its name when the partner
    is an indirect reseller (the program names those apart). Recorded with the change, in the
    same transaction (the event log), and delivered to subscribers from there."""

    event: str
    indirect: str | None = None

    def name_for(self, partner_kind: str) -> str:
        return self.indirect if self.indirect and partner_kind == "indirect_reseller" else self.event


@dataclass(frozen=True)
class Cascade:
    """Once the change is recorded, every open `lifecycle` of the same cloud, partner and customer
    is told to fire `trigger` (an `Upstream` row there; ignored where its state allows none).
    `since`: the `workflow.patched` id under which it was added (older histories replay)."""

    lifecycle: str
    trigger: str
    since: str | None = None
    if_set: str | None = None  # only where this record field is set


Effect = Send | Set | Take | Until | Keep | Mark | Add | VoidToken | Publish | Cascade

# --- rows, commands, deadlines, the lifecycle ----------------------------------------


@dataclass(frozen=True)
class Row:
    """One transition: `trigger` moves `sources` → `dest` for `by`, when every guard holds."""

    trigger: str
    sources: tuple[str, ...]
    dest: str
    operation: str  # the audit operation, in the program's own names
    by: By
    guards: tuple[Guard, ...] = ()
    effects: tuple[Effect, ...] = ()
    unchanged_if: Guard | None = None  # already so: the update succeeds and changes nothing

    @property
    def is_start(self) -> bool:
        return not self.sources

    def sends(self) -> tuple[Send, ...]:
        return tuple(e for e in self.effects if isinstance(e, Send))

    def publishes(self) -> Publish | None:
        return next((e for e in self.effects if isinstance(e, Publish)), None)


@dataclass(frozen=True)
class Command:
    """What a caller sends to fire a trigger: its payload model and one line of help."""

    payload: type[BaseModel]
    about: str
    cli: str  # the `partnerflow` subcommand
    flags: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # a yes/no field's two CLI flags


@dataclass(frozen=True)
class Deadline:
    """A state that lasts at most the start input's `timers.<after>`, then `fires` (a Timer row);
    or that ends `timers.<lead>` (if given) before the moment a record field holds (`until`,
    written by an `Until` effect): a term that outlives the state it began in.

    Reminders go out `timers.<reminders>` before the end (never late: one whose moment
    passed during an outage is skipped). An `after` clock starts each time a row enters the
    state; an `until` deadline moves only when its field does.
    """

    state: str
    after: str | None = None
    fires: str = ""
    until: str | None = None
    lead: str | None = None
    reminders: str | None = None
    reminder: Send | tuple[Send, ...] | None = None  # one letter each time, or several (to several people)

    def letters(self) -> tuple[Send, ...]:
        return self.reminder if isinstance(self.reminder, tuple) else (self.reminder,) if self.reminder else ()


@dataclass(frozen=True)
class Snapshot:
    """What a view or a summary is made of: the start input and what the workflow knows now."""

    start: Any
    state: str
    fields: Mapping[str, Any]
    token_expires_at: datetime | None
    audit: tuple[Any, ...]
    deadline_at: datetime | None = None  # when the current state's deadline fires, if it has one


@dataclass(frozen=True)
class Lifecycle:
    """Everything one lifecycle means. Checked for consistency when it is built."""

    name: str
    workflow_type: str
    workflow_id: str  # format, over the start input's ids: "relationship/{partner_id}/{customer_id}"
    states: tuple[str, ...]
    final: frozenset[str]
    rows: tuple[Row, ...]
    commands: Mapping[str, Command]
    deadlines: tuple[Deadline, ...]
    fields: Mapping[str, JsonValue]  # record fields and their first values
    flags: Mapping[str, bool | int | str]  # the workflow's own fields, never recorded
    start_model: type[BaseModel]
    view_model: type[BaseModel]
    begin: Callable[[Any], str]  # which start row a start input fires
    view: Callable[[Snapshot], BaseModel]
    summary: Callable[[Any], str]  # the Web UI's one-line summary (escaped by the caller)
    state_attribute: str  # the Keyword search attribute that holds the state
    # Text fields the Web UI may show beside the yes/no and count ones: codes, never personal data.
    web_ui_codes: tuple[str, ...] = ()
    # Record columns read off the (admitted) start input with every change, not kept in the
    # workflow: a run continued from before such a column existed records it all the same.
    from_start: Mapping[str, Callable[[Any], str | None]] = field(default_factory=dict)
    token_expiry_attribute: str | None = None  # the Datetime one that holds the latest link's deadline
    # Datetime search attributes kept equal to a record field's moment (an `Until` field).
    moment_attributes: Mapping[str, str] = field(default_factory=dict)
    token_query: str | None = None  # the query a link's page asks with its token
    table: str = "entities"  # where the records keep the lifecycle's current row
    letters: Mapping[str, Callable[[LetterFacts], tuple[str, str]]] = field(default_factory=dict)
    # A continued run's state as an older workflow wrote it, in today's shape (keys of `LifeData`).
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError(f"lifecycle {self.name}: " + "; ".join(problems))

    # --- derived views of the table -------------------------------------------------
    def rows_for(self, trigger: str) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.trigger == trigger)

    def sources_of(self, trigger: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for r in self.rows_for(trigger) for s in r.sources))

    def by(self, trigger: str) -> By:
        return self.rows_for(trigger)[0].by

    @property
    def updates(self) -> tuple[str, ...]:
        """Triggers a caller may send (the Temporal updates), in table order."""
        return tuple(
            dict.fromkeys(r.trigger for r in self.rows if not r.is_start and not isinstance(r.by, Timer | Upstream))
        )

    @property
    def starts(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.is_start)

    def deadline_in(self, state: str) -> Deadline | None:
        return next((d for d in self.deadlines if d.state == state), None)

    def guards(self) -> dict[str, Guard]:
        return {g.name: g for r in self.rows for g in (*r.guards, *((r.unchanged_if,) if r.unchanged_if else ()))}

    def workflow_id_for(self, start: Any) -> str:
        """`workflow_id` filled in from the start input: the partner's and customer's ids, and
        any top-level text field of the start (a lifecycle with several per customer names one)."""
        own = {name: value for name, value in start if isinstance(value, str)}
        return self.workflow_id.format(**own, partner_id=start.partner.id, customer_id=start.customer.id)


def N_(message: str) -> str:
    """Marks English text for the catalogs (activities/i18n.py extracts every `N_("...")`): a
    letter's subject and body, a page's words. The reader gets it in their language."""
    return message


@dataclass(frozen=True)
class LetterFacts:
    """What a letter's text may use. Names come from the start input; `link` only for a token
    letter; `expires` is `expires_at` as the reader writes it, `translate` their catalog."""

    partner_name: str
    company: str
    expires_at: datetime | None = None
    reason: str = ""
    link: str = ""
    expires: str = ""
    translate: Callable[[str], str] = str


def _problems(lc: Lifecycle) -> Any:
    """Every way a declaration contradicts itself, as sentences (empty when it is sound)."""
    known = set(lc.states)
    for row in lc.rows:
        events = sum(isinstance(e, Publish) for e in row.effects)
        if events != 1:
            yield f"{row.trigger}: publishes {events} events (every change has one)"
        for state in (*row.sources, row.dest):
            if state not in known:
                yield f"{row.trigger}: unknown state {state}"
        for effect in row.effects:
            if isinstance(effect, Send) and effect.letter not in lc.letters:
                yield f"{row.trigger}: no text for letter {effect.letter}"
            written = effect.field if isinstance(effect, Set | Take | Until | Keep | Mark | Add) else None
            if written is not None and written not in {**lc.fields, **lc.flags}:
                yield f"{row.trigger}: unknown field {written}"
            if isinstance(effect, Send) and effect.token and not getattr(lc.deadline_in(row.dest), "after", None):
                yield f"{row.trigger}: a link letter needs a deadline (`after`) on {row.dest} (the link's expiry)"
            if isinstance(effect, Send) and effect.token and not lc.token_query:
                yield f"{row.trigger}: a link letter needs a page (token_query) to link to"
        if not row.is_start and not isinstance(row.by, Timer | Upstream) and row.trigger not in lc.commands:
            yield f"{row.trigger}: no command declares its payload"
        if {type(r.by) for r in lc.rows_for(row.trigger)} != {type(row.by)}:
            yield f"{row.trigger}: its rows disagree on who may fire it"
    for deadline in lc.deadlines:
        if (deadline.after is None) == (deadline.until is None):
            yield f"deadline of {deadline.state}: give exactly one of `after` and `until`"
        if deadline.lead and not deadline.until:
            yield f"deadline of {deadline.state}: `lead` is for an `until` deadline"
        if deadline.until and deadline.until not in lc.fields:
            yield f"deadline of {deadline.state}: unknown field {deadline.until}"
        fired = lc.rows_for(deadline.fires)
        if not fired or not all(isinstance(r.by, Timer) and deadline.state in r.sources for r in fired):
            yield f"deadline of {deadline.state}: {deadline.fires} must be a Timer row leaving it"
        for reminder in deadline.letters():
            if reminder.letter not in lc.letters:
                yield f"deadline of {deadline.state}: no text for letter {reminder.letter}"
    for name in lc.moment_attributes.values():
        if name not in lc.fields:
            yield f"moment_attributes: unknown field {name}"
    for name in lc.web_ui_codes:
        if name not in lc.fields:
            yield f"web_ui_codes: unknown field {name}"
    for name in lc.from_start:
        if name in lc.fields or name in lc.flags:
            yield f"from_start: {name} is a field already"
    for row in lc.rows:
        if isinstance(row.by, PartnerStaff):
            unknown = [w for w in row.by.whose if w not in WHOSE]
            if not row.by.whose or unknown:
                yield f"{row.trigger}: `of` must name some of {', '.join(WHOSE)} (not {unknown or 'nothing'})"
    for trigger in lc.commands:
        if not lc.rows_for(trigger):
            yield f"command {trigger}: no row"
    if not lc.starts:
        yield "no start row (a row with no sources)"
