"""Imports go one way. import-linter checks the packages (`make lint`); `worker` is a module it
cannot take as a root, so its own imports are checked here."""

from __future__ import annotations

import ast
from pathlib import Path

WORKER = Path(__file__).resolve().parent.parent / "worker.py"


def test_the_worker_imports_nothing_above_it() -> None:
    """The worker wires runtime, workflows and activities; the client, CLI and page sit above it."""
    tree = ast.parse(WORKER.read_text())
    imported = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"partnerflow", "portal"}
    assert {"runtime", "workflows", "activities"} <= imported
