"""`python -m partnerflow.codecserver`: the Temporal Web UI's codec server.

The Web UI (and `temporal … --codec-endpoint`) posts the payloads it shows to `…/decode`
as protobuf JSON, `{"payloads": [{"metadata": {...}, "data": "<base64>"}]}`, and gets them
back opened with the deployment's keyring (runtime.codec); `…/encode` seals what an operator
sends from the UI. Only the last segment of the path counts, as the protocol asks.

Whoever reaches it reads personal data: `make run` serves it on 127.0.0.1 to the dev
server's UI only (CORS); in production put it behind your single sign-on (the UI passes
the user's access token over HTTPS). It keeps nothing, logs no payload and lets nothing
be cached.
"""

from __future__ import annotations

import sys

import structlog
import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from partnerflow.runtime import logs
from partnerflow.runtime.codec import CodecError, EncryptionCodec, Keyring
from partnerflow.runtime.config import ConfigError, load
from partnerflow.runtime.process import run

log = structlog.get_logger("partnerflow.codec")
MAX_BODY_BYTES = 8 * 1024 * 1024  # a history page's payloads; Temporal caps one payload at 2 MB
NO_STORE = {"Cache-Control": "no-store"}
#: Headers the Web UI sends: the namespace, and the user's tokens when "pass access token" is on.
UI_HEADERS = ["content-type", "x-namespace", "authorization", "authorization-extras"]


def _refuse(status: int, rule: str) -> JSONResponse:
    return JSONResponse({"error": rule}, status_code=status, headers=NO_STORE)


async def _body(request: Request) -> bytes | None:
    """The body, or None past MAX_BODY_BYTES (read no further than that)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def create_app(keyring: Keyring, ui_origins: list[str]) -> Starlette:
    codec = EncryptionCodec(keyring)

    async def transform(request: Request) -> Response:
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if action not in ("encode", "decode"):
            return _refuse(404, "path: must end in /encode or /decode")
        body = await _body(request)
        if body is None:
            return _refuse(413, f"body: at most {MAX_BODY_BYTES} bytes")
        try:
            payloads = json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError):
            return _refuse(400, 'body: must be a Payloads document, {"payloads": [...]}')
        try:
            done = await (codec.encode if action == "encode" else codec.decode)(payloads.payloads)
        except CodecError as error:
            return _refuse(400, str(error))  # names a key id, never data
        log.info(f"codec.{action}d", payloads=len(done))
        text = json_format.MessageToJson(Payloads(payloads=done), indent=None)
        return Response(text, media_type="application/json", headers=NO_STORE)

    cors = Middleware(
        CORSMiddleware,
        allow_origins=ui_origins,
        allow_methods=["POST"],
        allow_headers=UI_HEADERS,
        allow_credentials=True,  # the UI's "include cross-origin credentials" (for a proxy's cookie)
    )
    return Starlette(routes=[Route("/{path:path}", transform, methods=["POST"])], middleware=[cors])


async def _serve() -> None:
    settings = load()
    logs.configure(settings.log.format, settings.log.level)
    keyring = settings.keyring()
    if keyring is None:
        raise ConfigError(
            "encryption: no keyring (encryption.keys_file or PARTNERFLOW_ENCRYPTION__KEYS): nothing to open"
        )
    app = create_app(keyring, settings.ui_origins())
    config = uvicorn.Config(
        app,
        host=settings.codec_server.host,
        port=settings.codec_server.port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    log.info("codec.serving", port=settings.codec_server.port, ui_origins=settings.ui_origins())
    await uvicorn.Server(config).serve()


def main() -> int:
    return run(_serve)


if __name__ == "__main__":
    sys.exit(main())
