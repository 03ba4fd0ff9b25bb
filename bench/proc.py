"""What a process has used, read from /proc (Linux): CPU seconds and resident memory."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of `pid` so far."""
    fields = _stat_fields(pid)  # fields[0] is field 3 (state): utime is field 14, stime 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    """`VmRSS` (resident now) or `VmHWM` (peak resident) of `pid`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(f"{key} not in /proc/{pid}/status")


def child_named(prefix: str, parent: int | None = None) -> int | None:
    """The pid of a child of `parent` (default: this process) whose command starts with `prefix`."""
    parent = os.getpid() if parent is None else parent
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if comm.startswith(prefix) and int(text.rsplit(")", 1)[1].split()[1]) == parent:
            return int(entry.name)
    return None


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen
