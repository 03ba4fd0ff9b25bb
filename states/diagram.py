"""A lifecycle's diagram (Mermaid), generated from the same rows as its machine."""

from __future__ import annotations

import sys

from partnerflow.states.declaration import Lifecycle, Timer, Upstream
from partnerflow.states.lifecycles import LIFECYCLES


def mermaid(lifecycle: Lifecycle) -> str:
    lines = ["stateDiagram-v2"]
    for row in lifecycle.starts:
        lines.append(f"    [*] --> {row.dest}: {row.trigger}")
    seen: set[tuple[str, str, str]] = set()
    for row in lifecycle.rows:
        for source in row.sources:
            label = f"{row.trigger} (timer)" if isinstance(row.by, Timer) else row.trigger
            label += " (cascade)" if isinstance(row.by, Upstream) else ""
            edge = (source, row.dest, label)
            if edge not in seen:
                seen.add(edge)
                lines.append(f"    {source} --> {row.dest}: {label}")
    for state in sorted(lifecycle.final):
        lines.append(f"    {state} --> [*]")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(LIFECYCLES[sys.argv[1] if len(sys.argv) > 1 else "relationship"]), end="")
