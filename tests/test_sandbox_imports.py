"""The workflow sandbox imports partnerflow's workflow modules again for every workflow.

Under pytest (partnerflow's test kit is a plugin of this distribution, so pytest rewrites
the distribution's modules) a rewritten module would import pytest's own internals inside
the sandbox, for every workflow: seconds each, enough to trip the SDK's deadlock detector.
`PYTEST_DONT_REWRITE` in their docstrings keeps them as written.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

import partnerflow.workflows.interpreter
import partnerflow.workflows.lifecycles

# Everything else the workflow imports is passed through (imported once per worker).
SANDBOXED = [
    "partnerflow.workflows",
    partnerflow.workflows.interpreter.__name__,
    partnerflow.workflows.lifecycles.__name__,
]


def import_afresh(name: str) -> ModuleType:
    """Import `name` through the same finders a sandbox would (pytest's hook among them)."""
    parent = name.rpartition(".")[0]
    path = sys.modules[parent].__path__ if parent else None
    spec = next(s for finder in sys.meta_path if (s := finder.find_spec(name, path)) is not None)  # type: ignore[call-arg]
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SANDBOXED)
def test_sandboxed_modules_are_not_rewritten_by_pytest(name: str) -> None:
    assert "@pytest_ar" not in vars(import_afresh(name)), f"{name} needs PYTEST_DONT_REWRITE in its docstring"
