"""What ops read in the Temporal Web UI: the lifecycle in plain Markdown.

The UI renders Markdown but not Mermaid, so the path is text with the current
state in bold, followed by the actions the table allows next and the last change.
Details are served by the workflow on request (not indexed like search attributes),
so naming who made the last change is fine there; tokens never appear.
"""

from __future__ import annotations

from states.lifecycle import FINAL_STATES, TRANSITIONS, State
from states.models import RelationshipView

_PATH = [s for s in State if s not in FINAL_STATES]


def current_details(view: RelationshipView) -> str:
    states = _PATH if view.state in _PATH else [*_PATH, view.state]
    path = " → ".join(f"**{s.value}**" if s is view.state else s.value for s in states)
    actions = sorted({t.trigger for t in TRANSITIONS if view.state in t.sources and not t.timer})
    lines = [
        f"### {view.company} ← {view.partner_name} · {view.cloud.value}",
        path,
        "",
        f"**State:** {view.state.value} · purchase permission: "
        f"{'on' if view.purchase_permission else 'off'} · reinstated: {view.reinstated_count}",
        "",
        "**Next:** " + (", ".join(f"`{a}`" for a in actions) if actions else "none (final)"),
    ]
    if view.invitation_expires_at:
        lines += ["", f"**Invitation expires:** {view.invitation_expires_at:%Y-%m-%d %H:%M} UTC"]
    if view.audit:
        last = view.audit[-1]
        lines += [
            "",
            f"**Last change:** `{last.operation}` by {last.actor_user} ({last.actor_role})"
            f" at {last.at:%Y-%m-%d %H:%M:%S} UTC",
        ]
    return "\n".join(lines)
