"""`python -m partnerflow.codecserver`: the Temporal Web UI's codec server.

The Web UI (and `temporal … --codec-endpoint`) posts the payloads it shows to `…/decode`
as protobuf JSON, `{"payloads": [{"metadata": {...}, "data": "<base64>"}]}`, and gets them
back opened with the deployment's keyring (runtime.codec); `…/encode` seals what an operator
sends from the UI. Only the last segment of the path counts, as the protocol asks.

Whoever it answers reads personal data. `make run` serves it on 127.0.0.1 to the dev
server's UI only (CORS). A deployment sets `codec_server.access`: then every request needs
a bearer token from its identity provider (the UI passes the signed-in user's access token
to an HTTPS endpoint), with the claims it names, and each opening is logged with the token's
subject. It keeps nothing, logs no payload and lets nothing be cached.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jwt
import structlog
import uvicorn
from google.protobuf import json_format
from jwt import PyJWK, PyJWKClient, PyJWKClientError, PyJWKSet
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from partnerflow.runtime import logs
from partnerflow.runtime.codec import CodecError, EncryptionCodec, Keyring
from partnerflow.runtime.config import CodecAccessSettings, ConfigError, load
from partnerflow.runtime.process import run
from partnerflow.states.proof import ALGORITHMS, key_set

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


class Refused(Exception):
    def __init__(self, status: int, rule: str) -> None:
        super().__init__(rule)
        self.status, self.rule = status, rule


@dataclass(frozen=True)
class Access:
    """Bearer tokens of one identity provider, with the claims an operator must carry."""

    issuer: str
    audience: str
    key_for: Callable[[str], PyJWK]  # the key that signed a token (by its `kid`)
    required_claims: Mapping[str, str]

    @classmethod
    def from_settings(cls, settings: CodecAccessSettings, resolve: Callable[[str], Path]) -> Access:
        if settings.jwks_url:
            client = PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300)
            key_for: Callable[[str], PyJWK] = client.get_signing_key_from_jwt
        else:
            try:
                keys = key_set(resolve(str(settings.jwks_file)).read_text())
            except Exception as error:  # a missing file, or PyJWT's several kinds of unusable key set
                where = "codec_server.access.jwks_file"
                raise ConfigError(f"{where}: not a readable JSON Web Key Set ({type(error).__name__})") from None
            key_for = partial(_from_set, keys)
        return cls(settings.issuer, settings.audience, key_for, settings.required_claims)

    def subject(self, authorization: str | None) -> str:
        """The operator a request comes from, or Refused naming what is missing."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Refused(401, f"authorization: a bearer token from {self.issuer} is required")
        try:
            key = self.key_for(token)
            if key.algorithm_name not in ALGORITHMS:
                raise Refused(401, f"authorization: tokens must be signed with {', '.join(ALGORITHMS)}")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=30,
            )
        except PyJWKClientError:
            raise Refused(503, "authorization: the identity provider's keys cannot be read") from None
        except jwt.PyJWTError as error:
            raise Refused(401, f"authorization: the token is not valid ({type(error).__name__})") from None
        for name, wanted in self.required_claims.items():
            value = claims.get(name)
            if value != wanted and not (isinstance(value, list) and wanted in value):
                raise Refused(403, f"authorization: the token's {name} must include {wanted}")
        return str(claims["sub"])


def _from_set(keys: PyJWKSet, token: str) -> PyJWK:
    kid = jwt.get_unverified_header(token).get("kid")
    found = [k for k in keys.keys if kid is None or k.key_id == kid]
    if len(found) != 1:
        raise jwt.InvalidKeyError("no key of that kid")
    return found[0]


def create_app(keyring: Keyring, ui_origins: list[str], access: Access | None = None) -> Starlette:
    codec = EncryptionCodec(keyring)

    async def transform(request: Request) -> Response:
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if action not in ("encode", "decode"):
            return _refuse(404, "path: must end in /encode or /decode")
        try:
            operator = access.subject(request.headers.get("authorization")) if access else None
        except Refused as refused:
            headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else {}
            return JSONResponse({"error": refused.rule}, refused.status, headers={**NO_STORE, **headers})
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
        log.info(f"codec.{action}d", payloads=len(done), operator=operator)
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
    access = settings.codec_server.access
    if access is None:
        log.warning("codec.open_to_all", hint="codec_server.access is unset: anyone who reaches it reads the data")
    app = create_app(keyring, settings.ui_origins(), Access.from_settings(access, settings.resolve) if access else None)
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
