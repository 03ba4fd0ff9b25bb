"""How partnerflow's processes end."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from partnerflow.runtime.config import ConfigError


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


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a process's `main` to its end: 0, or 2 with one line naming a configuration error
    (never a traceback), and Ctrl-C as a normal stop."""
    try:
        asyncio.run(main())
    except ConfigError as error:
        print(f"partnerflow: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
