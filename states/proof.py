"""Proven actors: a short-lived signed assertion (a JWT) says who acts, for what, where.

A calling service mints one per request, for the user it has signed in: `iss` (the
service), `sub` (the user's address), `aud`, `iat`, `exp` (at most `max_lifetime` later),
`jti` (used once), `action` (the trigger), `workflow_id`, and either `partner_id` and
`role` (partner staff) or `customer_id` (the customer's admin, from the customer portal).
The worker believes a claim only from an issuer configured to make it.

Pure: keys come in, a `Denial` or nothing comes out; no I/O, no Temporal. The worker
verifies with it twice: in each update's validator (never replayed, so rotating keys
never breaks a history) and in a start's admission (a local activity, whose answer is
recorded). SECURITY.md says what it proves and what it does not.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from jwt import PyJWKSet

from partnerflow.states.policy import Denial

Kind = Literal["partner_staff", "customer_admin"]
KINDS: tuple[Kind, ...] = ("partner_staff", "customer_admin")
#: The asymmetric algorithms a key may sign with: the worker holds public keys only.
ALGORITHMS = ("EdDSA", "ES256", "RS256")
DEFAULT_AUDIENCE = "partnerflow"
MAX_JTI = 128


@dataclass(frozen=True)
class Expected:
    """What a proof must say for this request to take effect."""

    kind: Kind
    action: str
    workflow_id: str
    user: str | None = None  # the actor's address (partner staff, or the customer's admin); partner and role
    partner_id: str | None = None
    role: str | None = None
    customer_id: str | None = None  # the customer's admin: the relationship's customer


@dataclass(frozen=True)
class Proven:
    """A proof that verified: its id, to refuse it the second time, and until when it matters."""

    jti: str
    expires_at: datetime
    issuer: str


@dataclass(frozen=True)
class Issuer:
    """A calling service the worker believes, for the kinds of claim it may make.

    `partners`: the partners it may speak for (None: any). A service of one partner gets
    its own issuer, so a leaked key speaks for that partner only."""

    name: str
    keys: PyJWKSet
    asserts: frozenset[Kind]
    partners: frozenset[str] | None = None


@dataclass(frozen=True)
class Verifier:
    """The worker's rule for proofs. `trusted`: callers are believed without one (SECURITY.md)."""

    mode: Literal["proven", "trusted"] = "proven"
    audience: str = DEFAULT_AUDIENCE
    issuers: Mapping[str, Issuer] = field(default_factory=dict)
    max_lifetime: timedelta = timedelta(minutes=5)
    leeway: timedelta = timedelta(seconds=30)

    def check(
        self, proof: str | None, expected: Expected, *, now: datetime, used: Iterable[str] = ()
    ) -> Proven | Denial | None:
        """The verified proof, or why it is refused; None in trusted mode (nothing is proven)."""
        if self.mode == "trusted":
            return None
        if not proof:
            return _no(f"proof is required for {expected.action}: a signed assertion of who acts (SECURITY.md)")
        try:
            header = jwt.get_unverified_header(proof)
            issuer = self.issuers.get(str(unverified_claims(proof).get("iss")))
            if issuer is None:
                return _no("proof: iss is not an issuer this worker believes")
            key = _key(issuer, header.get("kid"))
            if key is None:
                return _no(f"proof: no key {header.get('kid')!r} of issuer {issuer.name}")
            if key.algorithm_name not in ALGORITHMS:  # a shared secret would let the worker mint too
                return _no(f"proof: issuer {issuer.name}'s key must sign with {', '.join(ALGORITHMS)}")
            claims = jwt.decode(
                proof,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=issuer.name,
                options={
                    "require": ["iss", "sub", "aud", "iat", "exp", "jti"],
                    "verify_exp": False,  # checked below against `now`: the caller's clock, not PyJWT's
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidAudienceError:
            return _no(f"proof: aud must be {self.audience}")
        except jwt.PyJWTError as error:
            return _no(f"proof: not a valid assertion ({_plain(error)})")
        except Exception as error:  # anything a caller can send (deep nesting, odd types) is a refusal
            return _no(f"proof: not a valid assertion ({type(error).__name__})")
        try:
            return self._claims(issuer, claims, expected, now, set(used))
        except (OverflowError, ValueError, TypeError):  # dates no clock can hold, odd claim types
            return _no("proof: iat, exp and nbf must be dates a clock can hold")

    def _claims(
        self, issuer: Issuer, c: Mapping[str, Any], want: Expected, now: datetime, used: set[str]
    ) -> Proven | Denial:
        iat, exp = claim_time(c.get("iat")), claim_time(c.get("exp"))
        if iat is None or exp is None:
            return _no("proof: iat and exp must be numeric dates")
        if exp - iat > self.max_lifetime:
            return _no(f"proof: exp may be at most {int(self.max_lifetime.total_seconds())} s after iat")
        if now > exp + self.leeway:
            return _no("proof: expired")
        if iat > now + self.leeway or ("nbf" in c and (claim_time(c["nbf"]) or now) > now + self.leeway):
            return _no("proof: not valid yet (iat or nbf in the future)")
        if want.kind not in issuer.asserts:
            return _no(f"proof: issuer {issuer.name} may not assert a {want.kind.replace('_', ' ')}")
        if c.get("action") != want.action:
            return _no(f"proof: action must be {want.action}")
        if c.get("workflow_id") != want.workflow_id:
            return _no(f"proof: workflow_id must be {want.workflow_id}")
        if want.kind == "partner_staff":
            for claim, value in (("sub", want.user), ("partner_id", want.partner_id), ("role", want.role)):
                if c.get(claim) != value:
                    return _no(f"proof: {claim} must be the actor's ({value})")
            if issuer.partners is not None and want.partner_id not in issuer.partners:
                return _no(f"proof: issuer {issuer.name} may not speak for partner {want.partner_id}")
        elif c.get("customer_id") != want.customer_id:
            return _no(f"proof: customer_id must be this relationship's customer ({want.customer_id})")
        elif c.get("sub") != want.user:
            return _no("proof: sub must be customer_admin.email (the admin the portal signed in)")
        jti = str(c["jti"])
        if not 0 < len(jti) <= MAX_JTI:
            return _no(f"proof: jti must be 1 to {MAX_JTI} characters")
        if jti in used:
            return _no("proof: already used (jti): mint a new one for each request")
        return Proven(jti=jti, expires_at=exp, issuer=issuer.name)


def unverified_claims(proof: str) -> dict[str, Any]:
    """The claims as written, unchecked: for a replay-safe record of which `jti` was used."""
    try:
        segment = proof.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except Exception:  # whatever a caller sent: no claims (it runs in an update handler: never raise)
        return {}
    return claims if isinstance(claims, dict) else {}


def key_set(jwks: str | Mapping[str, Any]) -> PyJWKSet:
    """A JSON Web Key Set (public keys, each with its `kid`)."""
    data = json.loads(jwks) if isinstance(jwks, str) else dict(jwks)
    return PyJWKSet.from_dict(data)


def _key(issuer: Issuer, kid: Any) -> Any:
    keys = issuer.keys.keys
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((k for k in keys if k.key_id == kid), None)


def claim_time(value: Any) -> datetime | None:
    """A NumericDate claim as a time; None for anything else (too big, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _plain(error: Exception) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def _no(message: str) -> Denial:
    return Denial("proof", message)


def wall_clock() -> datetime:
    """The real time, for a validator (never replayed). Here, not in the workflow's module: the
    sandbox refuses a clock read from workflow code, as it should everywhere else."""
    return datetime.now(UTC)
