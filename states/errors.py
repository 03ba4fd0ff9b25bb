"""The one formatter of validation errors: 'field.path: rule' for each problem, named for its model.

The converter, the workflow, the client, the CLI, the import and the page all say a bad
input the same way, so a caller learns one shape.
"""

from __future__ import annotations

from pydantic import ValidationError


def problems(error: ValidationError) -> list[dict[str, str]]:
    """Each problem as {"field": "a.b", "rule": "..."}: for JSON output. The rule is pydantic's
    message without its "Value error, " prefix (our own validators' words stand alone)."""
    return [
        {
            "field": ".".join(str(p) for p in problem["loc"]) or "input",
            "rule": str(problem["msg"]).removeprefix("Value error, "),
        }
        for problem in error.errors(include_url=False)
    ]


def describe(error: ValidationError) -> str:
    """One line: short enough for a CLI, exact enough to fix the input."""
    return f"invalid {error.title}: " + "; ".join(f"{p['field']}: {p['rule']}" for p in problems(error))
