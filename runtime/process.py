"""How partnerflow's processes end."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_without_teardown(code: int) -> NoReturn:
    """Exit with `code` once output is flushed, skipping the interpreter's teardown.

    The Temporal SDK's Rust threads can call into Python while the interpreter finalizes,
    which aborts the process (SIGABRT, "PyGILState_Release: thread state must be current";
    temporalio/sdk-python#300): a clean stop would be reported as a crash. Everything worth
    doing is done by the time this is called (workers shut down, files closed).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
