"""Hands the worker's proof rule to each workflow it runs, before any update is validated.

The rule holds keys read from files, which workflow code may not read; an interceptor
is built once per worker, outside the sandbox, and so can carry it in. A workflow that
ran without it would have no rule and refuse every update that needs a proof.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from partnerflow.states.proof import Verifier


class _HandIn(WorkflowInboundInterceptor):
    verifier: Verifier

    def _hand_in(self) -> None:
        instance: Any = workflow.instance()
        instance.verifier = self.verifier

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        self._hand_in()
        return await super().execute_workflow(input)

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        self._hand_in()  # an update may be validated before the run method starts
        super().handle_update_validator(input)


class ProofInterceptor(Interceptor):
    """Installed by `worker.new_worker` with the configured `Verifier`."""

    def __init__(self, verifier: Verifier) -> None:
        self._class = type("HandInProofRule", (_HandIn,), {"verifier": verifier})

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return self._class
