"""When a state's deadline or its next reminder is due: pure arithmetic over the workflow's data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from partnerflow.states.declaration import Lifecycle, Send
from partnerflow.workflows.data import LifeData


@dataclass(frozen=True)
class Due:
    at: datetime
    deadline: datetime
    fires: str | None = None  # the Timer row's trigger, when the deadline itself is due
    reminders: tuple[Send, ...] = ()  # the letters, when a reminder is due (none and no `fires`: skip it)


def deadline_at(lifecycle: Lifecycle, d: LifeData, timers: Any) -> datetime | None:
    """When the current state's deadline fires; None in a state without one."""
    deadline = lifecycle.deadline_in(d.state)
    if deadline is None:
        return None
    if deadline.until:  # a moment the records hold, less a lead
        moment = d.fields.get(deadline.until)
        if not isinstance(moment, str):
            return None
        lead: timedelta = getattr(timers, deadline.lead) if deadline.lead else timedelta(0)
        return datetime.fromisoformat(moment) - lead
    if d.entered_at is None or deadline.after is None:
        return None
    end: datetime = d.entered_at + getattr(timers, deadline.after)
    return end


def next_due(lifecycle: Lifecycle, d: LifeData, timers: Any, now: datetime) -> Due | None:
    deadline, end = lifecycle.deadline_in(d.state), deadline_at(lifecycle, d, timers)
    if deadline is None or end is None:
        return None
    if deadline.reminders:
        befores: list[timedelta] = sorted(getattr(timers, deadline.reminders), reverse=True)
        n = d.reminders_sent
        if n < len(befores):
            rest = befores[n + 1 :]
            following = end - rest[0] if rest else end
            # Past the next moment already (a worker outage): never send it late.
            return Due(end - befores[n], end, reminders=() if now >= following else deadline.letters())
    return Due(end, end, fires=deadline.fires)
