"""What ops find and read in the Temporal Web UI: search attributes and the Markdown details.

The UI renders Markdown (links and images too) but not Mermaid, so the path is text with
the current state in bold, then the actions the declaration allows next and the last
change. Everything a user typed is escaped: it shows as text, never as a link.
Search attributes hold ids, states and deadlines only: they are stored unencrypted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

from partnerflow.states.declaration import Lifecycle, Snapshot, Timer, Upstream
from partnerflow.states.inert import markdown
from partnerflow.states.names import CLOUD, CUSTOMER_ID, PARTNER_ID, STATE_CHANGED_AT


def summary(lifecycle: Lifecycle, start: Any) -> str:
    return markdown(lifecycle.summary(start))


def details(lifecycle: Lifecycle, snap: Snapshot) -> str:
    s = snap.start
    path_states = [st for st in lifecycle.states if st not in lifecycle.final]
    states = path_states if snap.state in path_states else [*path_states, snap.state]
    path = " → ".join(f"**{st}**" if st == snap.state else st for st in states)
    by_callers = [r for r in lifecycle.rows if not isinstance(r.by, Timer | Upstream)]
    actions = sorted({r.trigger for r in by_callers if snap.state in r.sources})
    # Yes/no and count fields only: a text field (an address) is personal data, not for the Web UI.
    shown = [name for name, first in lifecycle.fields.items() if isinstance(first, bool | int)]
    shown += [name for name in lifecycle.web_ui_codes if snap.fields.get(name)]  # codes, set only while they apply
    fields = " · ".join(f"{name.replace('_', ' ')}: {_shown(snap.fields[name])}" for name in shown)
    lines = [
        f"### {markdown(s.customer.company)} ← {markdown(s.partner.name or s.partner.id)} · {s.cloud.value}",
        path,
        "",
        f"**State:** {snap.state}" + (f" · {fields}" if fields else ""),
        "",
        "**Next:** " + (", ".join(f"`{a}`" for a in actions) if actions else "none (final)"),
    ]
    deadline = lifecycle.deadline_in(snap.state)
    linked = any(send.token for row in lifecycle.rows if row.dest == snap.state for send in row.sends())
    if snap.token_expires_at and deadline and linked:  # the state's deadline is its link's
        lines += ["", f"**Link expires:** {snap.token_expires_at:%Y-%m-%d %H:%M} UTC"]
    elif deadline and snap.deadline_at:
        lines += ["", f"**Unless changed before {snap.deadline_at:%Y-%m-%d %H:%M} UTC:** `{deadline.fires}`"]
    if snap.audit:
        last = snap.audit[-1]
        lines += [
            "",
            f"**Last change:** `{last.operation}` by {markdown(last.actor_user)} ({last.actor_role})"
            f" at {last.at:%Y-%m-%d %H:%M:%S} UTC",
        ]
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return markdown(str(value))


def publish(lifecycle: Lifecycle, snap: Snapshot, since: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keep the search attributes and the details current (a workflow-side call); returns the
    attributes' values. Given `since` (the values the run published last), only those that
    differ are sent: each update is a history event and a visibility write on the server, and
    its size is the worker's cost of it."""
    s = snap.start
    updates: list[SearchAttributeUpdate[Any]] = [
        SearchAttributeKey.for_keyword(lifecycle.state_attribute).value_set(snap.state),
        SearchAttributeKey.for_keyword(PARTNER_ID).value_set(s.partner.id),
        SearchAttributeKey.for_keyword(CUSTOMER_ID).value_set(s.customer.id),
        SearchAttributeKey.for_keyword(CLOUD).value_set(s.cloud.value),
    ]
    if snap.audit:
        updates.append(SearchAttributeKey.for_datetime(STATE_CHANGED_AT).value_set(snap.audit[-1].at))
    if snap.token_expires_at and lifecycle.token_expiry_attribute:
        # Kept after the link is answered (read it with the state): the time-skipping
        # server cannot describe an unset Datetime attribute.
        updates.append(
            SearchAttributeKey.for_datetime(lifecycle.token_expiry_attribute).value_set(snap.token_expires_at)
        )
    for attribute, name in lifecycle.moment_attributes.items():
        if isinstance(moment := snap.fields.get(name), str):
            updates.append(SearchAttributeKey.for_datetime(attribute).value_set(datetime.fromisoformat(moment)))
    values = {u.key.name: u.value for u in updates}
    if since is not None:
        updates = [u for u in updates if since.get(u.key.name) != u.value]
    if updates:
        workflow.upsert_search_attributes(updates)
    workflow.set_current_details(details(lifecycle, snap))
    return values
