"""`make run` and `make test` install from requirements.lock: every pin is what runs, hashed,
and within pyproject.toml's ranges (which stay for library users)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M)


def pins() -> dict[str, tuple[str, int]]:
    text = (ROOT / "requirements.lock").read_text()
    return {canonicalize_name(name): (version, hashes.count("--hash=")) for name, version, hashes in PIN.findall(text)}


def test_every_pin_is_hashed_and_is_what_is_installed() -> None:
    locked = pins()
    lines = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert len(locked) == len(lines) > 20, "every requirement line is a pin with its hashes"
    for name, (version, hashes) in locked.items():
        assert hashes >= 1, f"{name}: no hash"
        assert importlib.metadata.version(name) == version, f"{name}: installed is not the lock's {version}"


def test_the_lock_satisfies_pyproject_s_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    locked = pins()
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is in pyproject.toml but not locked: run `make lock`"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"{name}=={locked[name][0]} is outside pyproject.toml's {requirement.specifier}: run `make lock`"
        )
