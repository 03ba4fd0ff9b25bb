"""The customers' inboxes during a chaos run: every message the SMTP sink took, kept.

Read incrementally (one Maildir file per message, each read once), so the driver can
wait for a relationship's invitation without rereading thousands of files.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from partnerflow.mailsink import text_of

LINK = re.compile(r"[?&]relationship=([^&\s]+)&token=([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Delivered:
    message_id: str
    to: str
    subject: str
    workflow_id: str | None  # invitations name it in their link
    token: str | None


class Inbox:
    def __init__(self, maildir: Path, interval_s: float = 0.05) -> None:
        self.new = maildir / "new"
        self.new.mkdir(parents=True, exist_ok=True)
        self.interval_s = interval_s
        self.delivered: list[Delivered] = []
        self._seen: set[str] = set()
        self._tokens: defaultdict[str, list[str]] = defaultdict(list)
        self._changed = asyncio.Event()

    def scan(self) -> int:
        fresh = 0
        for name in sorted(set(os.listdir(self.new)) - self._seen):
            self._seen.add(name)
            message = email.message_from_bytes((self.new / name).read_bytes(), policy=email.policy.default)
            text = text_of(message)  # the link as the text part has it
            link = LINK.search(text)
            wid, token = (unquote(link[1]), link[2]) if link else (None, None)
            self.delivered.append(
                Delivered(str(message["Message-ID"]), str(message["To"]), str(message["Subject"]), wid, token)
            )
            if wid and token:
                self._tokens[wid].append(token)
            fresh += 1
        if fresh:
            self._changed.set()
        return fresh

    def tokens(self, wid: str) -> list[str]:
        """Tokens mailed for this relationship, oldest first."""
        return list(self._tokens[wid])

    async def changed(self, timeout_s: float = 2.0) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def message_ids(self) -> Counter[str]:
        return Counter(d.message_id for d in self.delivered)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[Inbox]:
        async def run() -> None:
            while True:
                self.scan()
                await asyncio.sleep(self.interval_s)

        task = asyncio.create_task(run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.scan()
