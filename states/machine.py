"""The `transitions` machine of a declared lifecycle: which row fires now, or why none may.

Never one shared global: its model holds one workflow's state. The interpreter keeps one
per workflow class and thread, and sets its state on each use (`at`), since building one
costs about a millisecond.
"""

from __future__ import annotations

import logging
from typing import Any

from transitions import EventData, Machine

from partnerflow.states.declaration import Facts, Guard, Lifecycle, Row

# transitions logs every transition at INFO: far too chatty for a workflow worker.
logging.getLogger("transitions").setLevel(logging.WARNING)


class _Model:
    """The machine's model: transitions adds `may_<trigger>` and `<trigger>` methods here."""

    state: str


def _condition(guard: Guard) -> Any:
    return lambda event: guard.holds(event.kwargs["facts"])


class LifecycleMachine:
    """One lifecycle's rows (not its start rows) as a `transitions` machine."""

    def __init__(self, lifecycle: Lifecycle, state: str) -> None:
        self.lifecycle = lifecycle
        self._model = _Model()
        self._fired: Row | None = None
        # Plain strings throughout: `transitions` names Enum states by their member name,
        # and a lifecycle may declare its states as a StrEnum.
        self._machine = Machine(
            model=self._model,
            states=[str(s) for s in lifecycle.states],
            initial=str(state),
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
        )
        for row in lifecycle.rows:
            if row.is_start:
                continue
            self._machine.add_transition(
                row.trigger,
                [str(s) for s in row.sources],
                str(row.dest),
                conditions=[_condition(g) for g in row.guards],
                after=lambda event, row=row: self._remember(row, event),
            )

    def at(self, state: str) -> LifecycleMachine:
        self._machine.set_state(str(state))
        return self

    def _remember(self, row: Row, event: EventData) -> None:
        self._fired = row

    @property
    def state(self) -> str:
        return self._model.state

    def may(self, trigger: str, facts: Facts) -> bool:
        """Would `trigger` fire now? Side-effect free: what a validator needs."""
        return bool(getattr(self._model, f"may_{trigger}")(facts=facts))

    def fire(self, trigger: str, facts: Facts) -> Row:
        """Fire `trigger` (the caller has checked `may`); returns the row that fired."""
        self._fired = None
        if not getattr(self._model, trigger)(facts=facts) or self._fired is None:
            raise RuntimeError(f"{trigger} did not fire from {self.state}")
        return self._fired

    def why_not(self, trigger: str, facts: Facts) -> tuple[str, str]:
        """(rule, message) saying why `trigger` cannot fire now."""
        sources = self.lifecycle.sources_of(trigger)
        if self.state not in sources:
            allowed = ", ".join(sources)
            what = self.lifecycle.name
            return "state", f"{trigger} is not allowed while the {what} is {self.state} (only from: {allowed})"
        for row in self.lifecycle.rows_for(trigger):
            if self.state in row.sources:
                for guard in row.guards:
                    if not guard.holds(facts):
                        return guard.name, guard.words(facts)
        return "state", f"{trigger} is not allowed now"
