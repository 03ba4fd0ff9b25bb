"""The SMTP sink in a process of its own: `python -m bench.sink MAILDIR PORT READY_FILE`.

partnerflow's `MailSink` (one Maildir file per message), kept out of the driver's
process so that SMTP handling competes with neither the driver nor the workers' GIL.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from partnerflow.mailsink import MailSink


def main(argv: list[str]) -> int:
    maildir, port, ready = Path(argv[0]), int(argv[1]), Path(argv[2])
    with MailSink(maildir, port=port):
        ready.write_text("ready")
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # before the SMTP thread starts
    sys.exit(main(sys.argv[1:]))
