"""A backend service installs partnerflow beside its own `workflows` and `states` packages.

The wheel is built from the repository as a release would be, installed into a fresh virtual
environment from requirements.lock (as `make test` installs its own), and a service with
packages of those generic names runs its own workflow and partnerflow's test kit in one test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIP_QUIET = ["--quiet", "--disable-pip-version-check"]

#: A backend service's own code, with the names a Temporal service very often has.
SERVICE = {
    "states/__init__.py": 'GREETING = "hello from the service\'s own states package"\n',
    "workflows/__init__.py": """
        from temporalio import workflow

        with workflow.unsafe.imports_passed_through():
            from states import GREETING


        @workflow.defn
        class Greet:
            @workflow.run
            async def run(self) -> str:
                return GREETING
        """,
    "pyproject.toml": """
        [tool.pytest.ini_options]
        asyncio_mode = "auto"
        asyncio_default_fixture_loop_scope = "session"
        asyncio_default_test_loop_scope = "session"
        """,
    "tests/test_service.py": """
        import sys
        import uuid
        from pathlib import Path

        import partnerflow
        import states
        import workflows
        from partnerflow.states.models import State
        from temporalio.worker import Worker
        from workflows import Greet

        HERE = Path(__file__).resolve().parent.parent


        def test_each_name_is_its_owner_s():
            assert Path(states.__file__).is_relative_to(HERE)
            assert Path(workflows.__file__).is_relative_to(HERE)
            assert Path(partnerflow.__file__).is_relative_to(Path(sys.prefix)), "the wheel's copy"


        async def test_the_service_and_partnerflow_run_side_by_side(partnerflow):
            handle = await partnerflow.bring_to("active")
            assert (await partnerflow.view(handle)).state is State.ACTIVE
            async with Worker(partnerflow.client, task_queue="service", workflows=[Greet]):
                greeting = await partnerflow.client.execute_workflow(
                    Greet.run, id=f"greet-{uuid.uuid4()}", task_queue="service"
                )
            assert greeting == states.GREETING
        """,
}


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from the committed layout (a copy, so the build leaves nothing in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in run("git", "ls-files", cwd=ROOT).splitlines():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to((ROOT / name).readlink())
        elif (ROOT / name).exists():
            shutil.copy2(ROOT / name, target)
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", *PIP_QUIET, "--no-deps", "--wheel-dir", out, source)
    (built,) = out.glob("partnerflow-*.whl")
    return built


def test_the_wheel_installs_everything_under_the_partnerflow_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"partnerflow", wheel.name.split("-py")[0] + ".dist-info"}
    for shipped in (
        "partnerflow/worker.py",
        "partnerflow/states/relationship.py",
        "partnerflow/workflows/interpreter.py",
        "partnerflow/activities/capabilities.py",
        "partnerflow/runtime/migrations/script.py.mako",
        "partnerflow/portal/templates/invitation.html",
        "partnerflow/states/locales/de/LC_MESSAGES/partnerflow.po",
        "partnerflow/activities/templates/letter.html",
    ):
        assert shipped in names, f"{shipped} is not in the wheel"


@pytest.mark.server
def test_a_service_with_its_own_workflows_and_states_runs_beside_it(wheel: Path, tmp_path: Path) -> None:
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python]
    run(*pip, "install", *PIP_QUIET, "--require-hashes", "-r", ROOT / "requirements.lock")
    run(*pip, "install", *PIP_QUIET, "--no-deps", wheel)
    run(*pip, "check")  # the wheel's dependencies are all met by the lock

    service = tmp_path / "service"
    for name, text in SERVICE.items():
        (service / name).parent.mkdir(parents=True, exist_ok=True)
        (service / name).write_text(textwrap.dedent(text).lstrip())
    output = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=service)
    assert "2 passed" in output, output
    assert "partnerflow" in run(environment / "bin" / "partnerflow", "--help")
