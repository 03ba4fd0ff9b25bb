"""A webhook receiver on a real port, for the tests and the chaos run: it keeps every delivery
(headers and body), can refuse (500), be slow, or be down, and checks each signature with the
`standardwebhooks` package, which is not ours."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Receiver:
    """An HTTP receiver on a real port: what it got, and how it answers."""

    port: int
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each delivery taken
    secret: str | None = None  # given: each delivery is verified as it arrives (the timestamp is fresh then)
    badly_signed: int = 0
    failing: int = 0  # answer 500 to this many more requests (-1: to every one)
    delay_s: float = 0.0
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/partnerflow"

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        await asyncio.sleep(self.delay_s)
        if self.failing:
            self.failing -= 1 if self.failing > 0 else 0
            return Response("busy", status_code=500)
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, dict(request.headers))
            except Exception:  # the package's refusal: a signature, an id or a timestamp wrong
                self.badly_signed += 1
        self.got.append((dict(request.headers), body))
        self.arrivals.append(time.monotonic())
        return Response(status_code=204)

    async def start(self) -> None:
        app = Starlette(routes=[Route("/hooks/partnerflow", self.handle, methods=["POST"])])
        sock = socket.create_server(("127.0.0.1", self.port))
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))

    async def stop(self) -> None:
        if self.server and self.task:
            self.server.should_exit = True
            await self.task

    def events(self, secret: str, *more: str) -> list[dict[str, Any]]:
        """Every delivery, verified with each secret given (all must verify), in arrival order."""
        found = []
        for headers, body in self.got:
            for key in (secret, *more):
                Webhook(key).verify(body, headers)  # raises unless signed with it
            assert headers["webhook-id"] == json.loads(body)["id"]
            found.append(json.loads(body))
        return found

    def unique(self) -> dict[str, dict[str, Any]]:
        """Each event once, by id, as it first arrived (unchecked: see `events` for signatures)."""
        found: dict[str, dict[str, Any]] = {}
        for _, body in self.got:
            event = json.loads(body)
            found.setdefault(event["id"], event)
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
