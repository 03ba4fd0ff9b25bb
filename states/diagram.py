"""The lifecycle diagram (Mermaid), generated from the same table as the machine."""

from __future__ import annotations

from states.lifecycle import FINAL_STATES, STARTS, TRANSITIONS


def mermaid() -> str:
    lines = ["stateDiagram-v2"]
    for origin, (initial, _, _) in STARTS.items():
        lines.append(f"    [*] --> {initial.value}: start ({origin})")
    seen: set[tuple[str, str, str]] = set()
    for row in TRANSITIONS:
        for source in row.sources:
            label = f"{row.trigger} (timer)" if row.timer else row.trigger
            edge = (source.value, row.dest.value, label)
            if edge not in seen:
                seen.add(edge)
                lines.append(f"    {source.value} --> {row.dest.value}: {label}")
    for state in sorted(FINAL_STATES):
        lines.append(f"    {state.value} --> [*]")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
