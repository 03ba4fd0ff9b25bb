"""The approval lifecycle's workflow class, made by the interpreter and bound by name for the sandbox.

PYTEST_DONT_REWRITE: the sandbox re-imports this module for every workflow.
"""

from __future__ import annotations

from temporalio import workflow

from partnerflow.workflows.interpreter import workflow_class

with workflow.unsafe.imports_passed_through():
    from tests.approval.declaration import APPROVAL

ApprovalWorkflow = workflow_class(APPROVAL, __name__)
