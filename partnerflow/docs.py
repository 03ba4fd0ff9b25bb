"""The generated parts of `docs/CONTRACT.md`: every table a declaration or a public name can say.

Between `<!-- generated: NAME -->` and `<!-- end: NAME -->` the file is rewritten from the
lifecycle declarations and `states.names`; the prose around it is hand-written. A test
fails while the committed file is stale.

    python -m partnerflow.docs           # rewrite the generated parts
    python -m partnerflow.docs --check   # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from partnerflow.states.declaration import (
    WHOSE,
    Add,
    By,
    Cascade,
    CustomerAdmin,
    Deadline,
    Effect,
    Keep,
    Lifecycle,
    Mark,
    PartnerStaff,
    Publish,
    Send,
    Set,
    Take,
    Timer,
    Until,
    Upstream,
    VoidToken,
)
from partnerflow.states.diagram import mermaid
from partnerflow.states.lifecycles import LIFECYCLES
from partnerflow.states.models import Cloud, Role
from partnerflow.states.names import NAMESPACES, SEARCH_ATTRIBUTES, TASK_QUEUE, ErrorType

CONTRACT = Path(__file__).resolve().parent.parent / "docs" / "CONTRACT.md"
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w.-]+) -->\n)(.*?)(<!-- end: (?P=name) -->)", re.S)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def who(by: By) -> str:
    if isinstance(by, Timer):
        return "partnerflow's timer"
    if isinstance(by, Upstream):
        return "partnerflow, told by a related lifecycle's change"
    if isinstance(by, CustomerAdmin):
        return (
            "the customer's global admin ("
            + ("the live link token" if by.proof == "token" else "customer portal")
            + ")"
        )
    roles = ", ".join(sorted(r.value for r in by.roles))
    text = " or ".join(f"{WHOSE[w]}'s" for w in by.whose) + f" {roles}"
    if by.kinds_denied:
        text += "; not an " + ", ".join(sorted(k.value for k in by.kinds_denied)) + "'s own staff"
    if by.clouds_denied:
        text += "; not in " + ", ".join(sorted(c.value for c in by.clouds_denied))
    return text


def effect(e: Effect) -> str:
    if isinstance(e, Send):
        return f"letter `{e.letter}` to {e.to.value.replace('_', ' ')}" + (" (new link)" if e.token else "")
    if isinstance(e, Set):
        return f"`{e.field}` = {e.value}"
    if isinstance(e, Take):
        return f"`{e.field}` = the caller's `{e.path}`"
    if isinstance(e, Keep):
        took = ", ".join(f"`{name}`" for name, _ in e.take)
        return f"`{e.field}`[the caller's `{e.key}`] = {took}" + (f", status {e.status}" if e.status else "")
    if isinstance(e, Mark):
        among = f" ({', '.join(e.among)})" if e.among else ""
        return f"every `{e.field}` entry{among}: status {e.status}"
    if isinstance(e, Until):
        return f"`{e.field}` = " + (f"`{e.since}`" if e.since else "now") + f" + the start's `{e.after}`"
    if isinstance(e, Add):
        return f"`{e.field}` + {e.amount}" + (f" if `{e.if_set}`" if e.if_set else "")
    if isinstance(e, VoidToken):
        return f"link void ({e.outcome.value})"
    if isinstance(e, Cascade):
        where = f" if `{e.if_set}`" if e.if_set else ""
        return f"every open {e.lifecycle} of the customer: `{e.trigger}`{where}"
    if isinstance(e, Publish):
        return f"event `{e.event}`" + (f" (`{e.indirect}` for an indirect reseller)" if e.indirect else "")
    raise TypeError(e)


def where() -> str:
    rows = [[f"namespace, cloud `{c.value}`", f"`{NAMESPACES[c]}`"] for c in Cloud]
    rows.append(["task queue", f"`{TASK_QUEUE}`"])
    for lc in LIFECYCLES.values():
        rows.append([f"workflow type ({lc.name})", f"`{lc.workflow_type}`"])
        rows.append([f"workflow id ({lc.name})", f"`{lc.workflow_id}`"])
    return _table(["what", "value"], rows)


def rows(lc: Lifecycle) -> str:
    body = []
    for r in lc.rows:
        payload = lc.commands[r.trigger].payload.__name__ if r.trigger in lc.commands else "–"
        sources = ", ".join(r.sources) or "(start)"
        guards = ", ".join(f"`{g.name}`" for g in r.guards) or "–"
        effects = "; ".join(effect(e) for e in r.effects) or "–"
        body.append([f"`{r.trigger}`", payload, f"{sources} → {r.dest}", r.operation, who(r.by), guards, effects])
    return _table(["trigger", "payload", "from → to", "audit operation", "who", "guards", "effects"], body)


def guards(lc: Lifecycle) -> str:
    return _table(["guard", "the rule"], [[f"`{g.name}`", g.rule] for g in lc.guards().values()])


def deadlines(lc: Lifecycle) -> str:
    def line(d: Deadline) -> list[str]:
        letters = ", ".join(f"`{r.letter}`" for r in d.letters())
        reminders = f"`timers.{d.reminders}` before, letters {letters}" if letters else "–"
        lead = f" less `timers.{d.lead}`" if d.lead else ""
        lasts = f"`timers.{d.after}`" if d.after else f"until `{d.until}`{lead}"
        return [d.state, lasts, f"`{d.fires}`", reminders]

    return _table(["state", "lasts at most", "then", "reminders"], [line(d) for d in lc.deadlines])


def roles(lc: Lifecycle) -> str:
    partner = [t for t in dict.fromkeys(r.trigger for r in lc.rows) if isinstance(lc.by(t), PartnerStaff)]
    body = []
    for role in Role:
        body.append([role.value, *("yes" if role in lc.by(t).roles else "–" for t in partner)])  # type: ignore[union-attr]
    return _table(["role", *(f"`{t}`" for t in partner)], body)


def errors() -> str:
    return _table(["type", "meaning"], [[f"`{e.value}`", _ERROR_MEANING[e]] for e in ErrorType])


_ERROR_MEANING = {
    ErrorType.INVALID_INPUT: "a payload's shape: the message names each field and its rule",
    ErrorType.INVALID_START: "a start that cannot be this workflow's (its id, its namespace, a `continued` field)",
    ErrorType.PERMISSION_DENIED: "the actor may not (role, partner, partner kind, cloud)",
    ErrorType.TRANSITION_NOT_ALLOWED: "not from the current state",
    ErrorType.GUARD_FAILED: "a named rule of the row does not hold (`rule` names it)",
    ErrorType.CLOUD_ISOLATION: "an activity of one cloud was asked to touch another cloud's rows",
    ErrorType.NOT_FOUND: "client side: no such workflow",
    ErrorType.UNAVAILABLE: "client side: Temporal cannot be reached or the outcome is unknown; nothing changed",
}


def attributes() -> str:
    return _table(["search attribute", "kind"], [[f"`{n}`", k] for n, k in SEARCH_ATTRIBUTES.items()])


def blocks() -> dict[str, Callable[[], str]]:
    found: dict[str, Callable[[], str]] = {"where": where, "errors": errors, "search-attributes": attributes}
    per_lifecycle: dict[str, Callable[[Lifecycle], str]] = {
        "states": lambda lc: ", ".join(f"`{s}`" for s in lc.states) + "\n",
        "rows": rows,
        "guards": guards,
        "deadlines": deadlines,
        "roles": roles,
        "diagram": lambda lc: "```mermaid\n" + mermaid(lc) + "```\n",
    }
    for lc in LIFECYCLES.values():
        for part, make in per_lifecycle.items():
            found[f"{lc.name}.{part}"] = partial(make, lc)
    return found


def render(text: str) -> str:
    makers = blocks()

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in makers:
            raise KeyError(f"unknown generated block {name}")
        return match.group(1) + makers[name]() + match.group(4)

    return _BLOCK.sub(fill, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partnerflow.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if docs/CONTRACT.md is stale")
    args = parser.parse_args(argv)
    text = CONTRACT.read_text(encoding="utf-8")
    fresh = render(text)
    if args.check:
        if fresh != text:
            print("docs/CONTRACT.md is stale: run `python -m partnerflow.docs`", file=sys.stderr)
            return 1
        return 0
    CONTRACT.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
