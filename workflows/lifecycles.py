"""The workflow class of every declared lifecycle, made by the interpreter and bound here by name.

The sandbox imports a workflow class from its module by `__name__` (for a lifecycle of
workflow type `Relationship`: `RelationshipWorkflow`), so each is a global of this module.

PYTEST_DONT_REWRITE: a sandbox given this module (a team's own worker) would re-import it for
every workflow, and pytest's rewriting would make that import pytest.
"""

from __future__ import annotations

from temporalio import workflow

from partnerflow.workflows.interpreter import Interpreter, workflow_class

with workflow.unsafe.imports_passed_through():
    from partnerflow.states.lifecycles import LIFECYCLES

#: By lifecycle name.
WORKFLOWS: dict[str, type[Interpreter]] = {name: workflow_class(lc, __name__) for name, lc in LIFECYCLES.items()}
globals().update({cls.__name__: cls for cls in WORKFLOWS.values()})
