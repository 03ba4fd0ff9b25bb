"""py-spy on a running worker, and the top costs of what it saw (`python -m bench --profile`).

py-spy samples the process from outside (`--nonblocking`: it never pauses it), so the
worker runs as it would; it sees Python frames only (the SDK's Rust core does not show).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

RATE = 250
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
SITE = "site-packages/"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def where(frame: str) -> str:
    """`function (file)` with the file shortened to its package path; line numbers dropped."""
    found = FRAME.match(frame)
    if not found:
        return frame
    file = found["file"]
    if SITE in file:
        file = file.split(SITE, 1)[1]
    elif "/work/main/" in file:
        file = file.split("/work/main/", 1)[1]
    return f"{found['function']} ({file})"


class Profile:
    def __init__(self, output: Path) -> None:
        self.output = output
        self.seconds = 0.0

    @contextlib.contextmanager
    def attached(self, pid: int) -> Iterator[None]:
        command = [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw"]
        command += ["--output", str(self.output), "--nonblocking", "--gil"]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # attached before the load starts
        began = time.monotonic()
        try:
            yield
        finally:
            self.seconds = time.monotonic() - began
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()

    def stacks(self) -> list[tuple[list[str], int]]:
        found = []
        for line in self.output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                found.append(([where(f) for f in stack.split(";")], int(count)))
        return found

    def report(self, run_note: str = "", top: int = 25) -> str:
        stacks = self.stacks()
        total = sum(count for _, count in stacks) or 1
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        by_file: Counter[str] = Counter()
        for frames, count in stacks:
            # py-spy lists a stack root first; the last frame is where the sample landed.
            frames = frames[1:] if frames and frames[0].startswith("process ") else frames
            if not frames:
                continue
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
            leaf = frames[-1]
            by_file[leaf[leaf.rfind("(") + 1 : -1].split("/")[0]] += count

        def block(title: str, counts: Counter[str]) -> list[str]:
            lines = [title]
            lines += [f"{100 * c / total:6.1f}%  {name}" for name, c in counts.most_common(top)]
            return [*lines, ""]

        ours = Counter(
            {
                k: v
                for k, v in inclusive.items()
                if any(p in k for p in ("(workflows/", "(states/", "(activities/", "(partnerflow/"))
            }
        )
        lines = [
            f"py-spy --gil profile of partnerflow's worker: {total} samples of the thread holding the GIL"
            f" in {self.seconds:.1f} s",
            run_note,
            "",
        ]
        lines += block("self time (where samples landed), by package:", by_file)
        lines += block("self time, top functions:", own)
        lines += block("inclusive time, top functions:", inclusive)
        lines += block("inclusive time, partnerflow's own code:", ours)
        return "\n".join(lines)
