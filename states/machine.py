"""The `transitions` machine built from the lifecycle table, and its named guards.

Built per workflow instance from the workflow's own state (never a shared
global), so replays and concurrent workflows cannot see each other.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from typing import Any

from transitions import EventData, Machine

from states.lifecycle import GUARD_RULES, TRANSITIONS, State, Transition, rows_for, sources_of

# transitions logs every transition at INFO: far too chatty for a workflow worker.
logging.getLogger("transitions").setLevel(logging.WARNING)


def token_hash(token: str) -> str:
    """The only form in which an invitation token is ever kept."""
    return hashlib.sha256(token.encode()).hexdigest()


class Lifecycle:
    """The machine's model: the current state plus what the guards need to decide."""

    state: str

    def __init__(self, state: State, **facts: Any) -> None:
        """Build the machine for `state`; `facts` are `refresh`'s (what the guards read)."""
        self._machine = Machine(
            model=self,
            states=[s.value for s in State],
            initial=state.value,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
        )
        for row in TRANSITIONS:
            self._machine.add_transition(
                row.trigger,
                [s.value for s in row.sources],
                row.dest.value,
                conditions=list(row.guards),
                after=lambda event, row=row: self._remember(row),
            )
        self.refresh(state, **facts)

    def refresh(
        self,
        state: State,
        *,
        token_sha256: str | None = None,
        token_expires_at: datetime | None = None,
        purchase_permission: bool = False,
        customer_id: str = "",
        now: datetime | None = None,
    ) -> Lifecycle:
        """The same machine, set to the workflow's facts of now: building a `transitions`
        machine costs about a millisecond, so a workflow builds one and refreshes it."""
        self._machine.set_state(state.value)
        self.fired: Transition | None = None
        self.token_sha256 = token_sha256
        self.token_expires_at = token_expires_at
        self.purchase_permission = purchase_permission
        self.customer_id = customer_id
        self.now = now
        return self

    def _remember(self, row: Transition) -> None:
        self.fired = row

    @property
    def current(self) -> State:
        return State(self.state)

    def may(self, trigger: str, **data: Any) -> bool:
        """Would `trigger` fire now? Side-effect free: what a validator needs."""
        return bool(getattr(self, f"may_{trigger}")(**data))

    def fire(self, trigger: str, **data: Any) -> Transition:
        """Fire `trigger`; the caller has already checked `may`."""
        self.fired = None
        if not getattr(self, trigger)(**data) or self.fired is None:
            raise RuntimeError(f"{trigger} did not fire from {self.state}")
        return self.fired

    def why_not(self, trigger: str, **data: Any) -> tuple[str, str]:
        """(rule, message) explaining why `trigger` cannot fire now."""
        sources = sources_of(trigger)
        if self.current not in sources:
            allowed = ", ".join(s.value for s in sources)
            return (
                "state",
                f"{trigger} is not allowed while the relationship is {self.state} (only from: {allowed})",
            )
        event = _GuardEvent(data)
        for row in rows_for(trigger):
            if self.current in row.sources:
                for guard in row.guards:
                    if not getattr(self, guard)(event):
                        return guard, GUARD_RULES[guard]
        return "state", f"{trigger} is not allowed now"

    # --- guards (named in the table) -------------------------------------------
    def token_is_valid(self, event: EventData | _GuardEvent) -> bool:
        command = event.kwargs.get("command")
        token = getattr(command, "token", None)
        if not token or not self.token_sha256:
            return False
        if self.token_expires_at and self.now and self.now >= self.token_expires_at:
            return False
        return hmac.compare_digest(token_hash(token), self.token_sha256)

    def token_is_valid_for(self, token: str) -> bool:
        return self.token_is_valid(_GuardEvent({"command": _Token(token)}))

    def agreement_accepted(self, event: EventData | _GuardEvent) -> bool:
        return getattr(event.kwargs.get("command"), "accept_agreement", False) is True

    def grants_purchase(self, event: EventData | _GuardEvent) -> bool:
        return bool(getattr(event.kwargs.get("command"), "allowed", False)) and not self.purchase_permission

    def revokes_purchase(self, event: EventData | _GuardEvent) -> bool:
        return getattr(event.kwargs.get("command"), "allowed", True) is False and self.purchase_permission

    def no_active_subscriptions(self, event: EventData | _GuardEvent) -> bool:
        # Unknown until the workflow asks the records; the handler passes the count.
        count = event.kwargs.get("active_subscriptions")
        return count is None or count == 0

    def customer_matches(self, event: EventData | _GuardEvent) -> bool:
        admin = getattr(event.kwargs.get("command"), "customer_admin", None)
        return getattr(admin, "customer_id", None) == self.customer_id


class _Token:
    def __init__(self, token: str) -> None:
        self.token = token


class _GuardEvent:
    """Just enough of `EventData` to evaluate one guard outside the machine."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
