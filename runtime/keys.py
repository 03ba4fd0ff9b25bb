"""Signing keys for proven actors: the signer a calling service (or the CLI) uses, and the
development keys `make run` and the tests make for themselves.

A key pair per issuer: the private key (PEM, readable by its owner only) stays with the
calling service; the worker is given the public half as a JSON Web Key Set.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partnerflow.states.models import Actor
from partnerflow.states.proof import DEFAULT_AUDIENCE, Kind

#: The development issuers `make run` trusts, and the claims each may make.
DEV_ISSUERS: dict[str, Kind] = {"partner-services": "partner_staff", "customer-portal": "customer_admin"}


@dataclass(frozen=True)
class Signer:
    """Mints one assertion per request, for the user its caller has signed in."""

    issuer: str
    key: Any  # a private key (cryptography)
    kid: str
    audience: str = DEFAULT_AUDIENCE
    lifetime: timedelta = timedelta(seconds=60)

    @classmethod
    def from_file(cls, issuer: str, path: Path, *, audience: str = DEFAULT_AUDIENCE) -> Signer:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        return cls(issuer, key, key_id(key.public_key()), audience)

    def sign(self, claims: dict[str, Any], *, now: datetime | None = None) -> str:
        issued = now or datetime.now(UTC)
        body = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(issued.timestamp()),
            "exp": int((issued + self.lifetime).timestamp()),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(body, self.key, algorithm=_algorithm(self.key), headers={"kid": self.kid})

    def for_actor(self, action: str, workflow_id: str, actor: Actor) -> str:
        """Partner staff: the user, partner and role a request acts as."""
        claims = {"sub": actor.user, "partner_id": actor.partner_id, "role": actor.role.value}
        return self.sign({**claims, "action": action, "workflow_id": workflow_id})

    def for_customer(self, action: str, workflow_id: str, customer_id: str, user: str) -> str:
        """The customer's admin, as the customer portal signed them in."""
        return self.sign({"sub": user, "customer_id": customer_id, "action": action, "workflow_id": workflow_id})


def key_id(public_key: Any) -> str:
    raw = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(raw).hexdigest()[:16]


def _algorithm(key: Any) -> str:
    if isinstance(key, Ed25519PrivateKey):
        return "EdDSA"
    return "ES256" if isinstance(key, EllipticCurvePrivateKey) else "RS256"


def public_jwks(private_key: Any) -> dict[str, Any]:
    """The JSON Web Key Set a worker is given for this key (its public half, with `kid` and `alg`)."""
    public = private_key.public_key()
    algorithm = jwt.get_algorithm_by_name(_algorithm(private_key))
    jwk = json.loads(algorithm.to_jwk(public))
    return {"keys": [{**jwk, "kid": key_id(public), "alg": _algorithm(private_key), "use": "sig"}]}


def new_key_pair(folder: Path, issuer: str) -> tuple[Path, Path]:
    """An Ed25519 key pair for `issuer` in `folder`: `<issuer>.pem` (owner-only) and `<issuer>.jwks.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private, public = folder / f"{issuer}.pem", folder / f"{issuer}.jwks.json"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public.write_text(json.dumps(public_jwks(key), indent=2) + "\n")
    return private, public


def ensure_dev_keys(folder: Path) -> None:
    """The development issuers' keys, made once (`make run`, the tests): never for production."""
    for issuer in DEV_ISSUERS:
        if not (folder / f"{issuer}.pem").is_file() or not (folder / f"{issuer}.jwks.json").is_file():
            new_key_pair(folder, issuer)
