"""Every update takes exactly the arguments CONTRACT.md gives it, checked before its validator.

The SDK decodes an update's payloads, then calls the validator with them: a null
payload, a missing one or one too many would reach it as `None` or as a Python
`TypeError`, and the caller would read an internal error instead of which input was
wrong. This interceptor refuses such a call as `InvalidInput`, naming the rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)


def update_arity(workflow_class: type) -> dict[str, int]:
    """How many arguments each update of `workflow_class` takes, read off its definition."""
    definition = workflow._Definition.must_from_class(workflow_class)
    return {name: len(update.arg_types or ()) for name, update in definition.updates.items() if name}


def _refusal(update: str, expected: int, args: Sequence[Any]) -> str | None:
    if len(args) != expected:
        wanted = "one JSON object" if expected == 1 else f"{expected} arguments"
        return f"invalid {update} payload: input: must be {wanted}, got {len(args)} arguments"
    if any(arg is None for arg in args):
        return f"invalid {update} payload: input: must be a JSON object, got null"
    return None


class _CheckArguments(WorkflowInboundInterceptor):
    arity: ClassVar[Mapping[str, int]] = {}

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        expected = self.arity.get(input.update)
        problem = None if expected is None else _refusal(input.update, expected, input.args)
        if problem:
            raise ApplicationError(problem, {"rule": "input"}, type="InvalidInput", non_retryable=True)
        super().handle_update_validator(input)


class ArgumentsInterceptor(Interceptor):
    """Installed by `worker.new_worker` for the workflows it runs."""

    def __init__(self, *workflow_classes: type) -> None:
        arity = {name: n for cls in workflow_classes for name, n in update_arity(cls).items()}
        self._class = type("CheckArguments", (_CheckArguments,), {"arity": arity})  # one class, every workflow

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return self._class
