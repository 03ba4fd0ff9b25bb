"""The proof rule on its own: what a signed assertion must say, and every way one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partnerflow.activities.capabilities import Capabilities
from partnerflow.activities.email import Mailer, SmtpSettings
from partnerflow.activities.records import Records
from partnerflow.client import Relationships
from partnerflow.runtime.config import ConfigError, ProofSettings, load
from partnerflow.runtime.keys import Signer, ensure_dev_keys, key_id, public_jwks
from partnerflow.states.messages import Admit
from partnerflow.states.models import Actor, Partner, Role
from partnerflow.states.policy import Denial
from partnerflow.states.proof import Expected, Issuer, Proven, Verifier, key_set, unverified_claims

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WID = "relationship/p-100/c-1"
ACTOR = Actor(user="sam@fabrikam.example", role=Role.SALES_AGENT, partner_id="p-100")
WANT = Expected("partner_staff", "resend_invitation", WID, ACTOR.user, "p-100", "sales_agent")


def _signer(issuer: str = "crm", key: object | None = None) -> Signer:
    key = key or Ed25519PrivateKey.generate()
    return Signer(issuer, key, key_id(key.public_key()))  # type: ignore[attr-defined]


CRM = _signer()
PORTAL = _signer("portal")


def _verifier(*extra: Issuer, partners: frozenset[str] | None = None) -> Verifier:
    issuers = {
        "crm": Issuer("crm", key_set(public_jwks(CRM.key)), frozenset({"partner_staff"}), partners),
        "portal": Issuer("portal", key_set(public_jwks(PORTAL.key)), frozenset({"customer_admin"})),
        **{i.name: i for i in extra},
    }
    return Verifier("proven", issuers=issuers)


def _claims(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": ACTOR.user,
        "partner_id": "p-100",
        "role": "sales_agent",
        "action": "resend_invitation",
        "workflow_id": WID,
    }
    return {**base, **changes}


def _denied(outcome: object) -> str:
    assert isinstance(outcome, Denial), outcome
    assert outcome.rule == "proof"
    return outcome.message


def test_a_fresh_assertion_for_the_actor_is_proven() -> None:
    outcome = _verifier().check(CRM.for_actor("resend_invitation", WID, ACTOR), WANT, now=datetime.now(UTC))
    assert isinstance(outcome, Proven) and outcome.issuer == "crm" and len(outcome.jti) == 32


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"partner_id": "p-200"}, "partner_id must be the actor's (p-100)"),
        ({"role": "global_admin"}, "role must be the actor's (sales_agent)"),
        ({"sub": "mallory@evil.example"}, "sub must be the actor's"),
        ({"action": "reinstate"}, "action must be resend_invitation"),
        ({"workflow_id": "relationship/p-100/c-2"}, "workflow_id must be relationship/p-100/c-1"),
        ({"aud": "someone-else"}, "aud must be partnerflow"),
    ],
)
def test_an_assertion_for_anything_else_is_refused(changes: dict[str, object], words: str) -> None:
    proof = CRM.sign(_claims(**changes), now=NOW)
    assert words in _denied(_verifier().check(proof, WANT, now=NOW))


def test_expired_future_and_long_lived_assertions_are_refused() -> None:
    proof = CRM.sign(_claims(), now=NOW)
    assert _verifier().check(proof, WANT, now=NOW + timedelta(seconds=60)) is not None  # within leeway
    assert "expired" in _denied(_verifier().check(proof, WANT, now=NOW + timedelta(minutes=2)))
    assert "future" in _denied(_verifier().check(proof, WANT, now=NOW - timedelta(minutes=5)))
    long = Signer(CRM.issuer, CRM.key, CRM.kid, lifetime=timedelta(hours=1)).sign(_claims(), now=NOW)
    assert "at most 300 s after iat" in _denied(_verifier().check(long, WANT, now=NOW))


def test_forged_unsigned_and_unknown_issuers_are_refused() -> None:
    stranger = _signer("crm")  # the right name, another key
    assert "no key" in _denied(_verifier().check(stranger.sign(_claims(), now=NOW), WANT, now=NOW))
    header, body, signature = CRM.sign(_claims(), now=NOW).split(".")
    forged_body = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged_body["partner_id"] = "p-evil"
    tampered = base64.urlsafe_b64encode(json.dumps(forged_body).encode()).rstrip(b"=").decode()
    assert "not a valid assertion" in _denied(_verifier().check(f"{header}.{tampered}.{signature}", WANT, now=NOW))
    unsigned = jwt.encode({**_claims(), "iss": "crm", "aud": "partnerflow"}, key="", algorithm="none")
    assert _denied(_verifier().check(unsigned, WANT, now=NOW))
    assert "iss is not an issuer" in _denied(_verifier().check(_signer("other").sign(_claims()), WANT, now=NOW))
    assert "required" in _denied(_verifier().check(None, WANT, now=NOW))
    assert "not a valid assertion" in _denied(_verifier().check("not.a.jwt", WANT, now=NOW))
    nested = "e30." + base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode() + ".x"
    assert _denied(_verifier().check(nested, WANT, now=NOW)) and unverified_claims(nested) == {}


def test_a_symmetric_key_cannot_be_passed_off_as_the_public_one() -> None:
    """Algorithm confusion: HS256 signed with the public key's bytes is not accepted."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "kid": CRM.kid}).encode())
    claims = {**_claims(), "iss": "crm", "aud": "partnerflow", "iat": int(NOW.timestamp()), "exp": 9e9, "jti": "x"}
    body = b64(json.dumps(claims).encode())
    public = json.dumps(public_jwks(CRM.key)["keys"][0]).encode()
    signature = b64(hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest())
    assert "not a valid assertion" in _denied(_verifier().check(f"{header}.{body}.{signature}", WANT, now=NOW))


def test_an_issuer_claims_only_what_it_may() -> None:
    customer = Expected("customer_admin", "remove_partner", WID, "admin@contoso.example", customer_id="c-1")
    as_customer = CRM.for_customer("remove_partner", WID, "c-1", "admin@contoso.example")
    assert "may not assert a customer admin" in _denied(_verifier().check(as_customer, customer, now=datetime.now(UTC)))
    from_portal = PORTAL.for_customer("remove_partner", WID, "c-1", "admin@contoso.example")
    assert isinstance(_verifier().check(from_portal, customer, now=datetime.now(UTC)), Proven)
    other = PORTAL.for_customer("remove_partner", WID, "c-2", "admin@contoso.example")
    assert "customer_id must be" in _denied(_verifier().check(other, customer, now=datetime.now(UTC)))
    limited = _verifier(partners=frozenset({"p-200"}))
    proof = CRM.for_actor("resend_invitation", WID, ACTOR)
    assert "may not speak for partner p-100" in _denied(limited.check(proof, WANT, now=datetime.now(UTC)))


def test_a_used_assertion_is_refused_and_trusted_mode_proves_nothing() -> None:
    proof = CRM.for_actor("resend_invitation", WID, ACTOR)
    jti = unverified_claims(proof)["jti"]
    assert "already used" in _denied(_verifier().check(proof, WANT, now=datetime.now(UTC), used=[jti]))
    assert Verifier("trusted").check(None, WANT, now=NOW) is None
    assert unverified_claims("garbage") == {}


def test_other_algorithms_verify_too() -> None:
    es = _signer("es", generate_private_key(SECP256R1()))
    issuer = Issuer("es", key_set(public_jwks(es.key)), frozenset({"partner_staff"}))
    outcome = _verifier(issuer).check(es.for_actor("resend_invitation", WID, ACTOR), WANT, now=datetime.now(UTC))
    assert isinstance(outcome, Proven)


def test_configuration_names_a_bad_key_set(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jwks.json"
    bad.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    settings = ProofSettings.model_validate(
        {"issuers": [{"name": "x", "jwks_file": str(bad), "asserts": ["partner_staff"]}]}
    )
    with pytest.raises(ConfigError, match=r"proof.issuers\[0\].jwks_file"):
        settings.verifier(Path)


def test_the_dev_keys_make_run_uses_verify(tmp_path: Path) -> None:
    ensure_dev_keys(tmp_path / ".dev" / "keys")
    assert oct((tmp_path / ".dev" / "keys" / "partner-services.pem").stat().st_mode & 0o777) == "0o600"
    env = {
        "PARTNERFLOW_PROOF__ISSUERS": json.dumps(
            [
                {
                    "name": "partner-services",
                    "jwks_file": str(tmp_path / ".dev/keys/partner-services.jwks.json"),
                    "asserts": ["partner_staff"],
                }
            ]
        ),
        "PARTNERFLOW_SIGNER__KEY_FILE": str(tmp_path / ".dev/keys/partner-services.pem"),
    }
    settings = load(env=env)
    signer = settings.signer_for_cli()
    assert signer is not None
    outcome = settings.verifier().check(signer.for_actor("resend_invitation", WID, ACTOR), WANT, now=datetime.now(UTC))
    assert isinstance(outcome, Proven)


def test_dates_no_clock_can_hold_and_overlong_ids_are_refused() -> None:
    far = CRM.sign({**_claims(), "iat": 253402300700, "exp": 253402300799}, now=NOW)  # year 9999
    assert "dates a clock can hold" in _denied(_verifier().check(far, WANT, now=NOW))
    long_id = CRM.sign({**_claims(), "jti": "j" * 129}, now=NOW)
    assert "jti must be 1 to 128 characters" in _denied(_verifier().check(long_id, WANT, now=NOW))


def test_a_customer_proof_names_the_admin_it_signed_in() -> None:
    customer = Expected("customer_admin", "remove_partner", WID, "admin@contoso.example", customer_id="c-1")
    other = PORTAL.for_customer("remove_partner", WID, "c-1", "mallory@evil.example")
    assert "sub must be customer_admin.email" in _denied(_verifier().check(other, customer, now=datetime.now(UTC)))


async def test_a_start_is_admitted_by_the_time_it_was_made_not_by_when_it_is_read(tmp_path: Path) -> None:
    """Workers down, or the database, for longer than a proof lives: the start still goes through,
    because its proof was fresh when the start was made (the server's start time)."""
    records = Records(f"sqlite:///{tmp_path / 'records.db'}")
    records.create_schema()
    records.put_partner("public", Partner(id="p-100", name="Fabrikam"), now=NOW)
    acts = Capabilities(records, Mailer(SmtpSettings()), "http://portal.test", "public", verifier=_verifier())
    made = datetime.now(UTC) - timedelta(hours=1)
    proof = CRM.sign({**_claims(), "action": "invite"}, now=made)
    admit = Admit(
        cloud="public",
        workflow_id=WID,
        run_id="run-1",
        requested_at=made + timedelta(seconds=5),
        action="invite",
        partner_id="p-100",
        actor_user=ACTOR.user,
        actor_role="sales_agent",
        actor_partner_id="p-100",
        proof=proof,
    )
    admitted = await acts.admit_start(admit)
    assert admitted.partner is not None and admitted.partner.name == "Fabrikam"
    assert (await acts.admit_start(admit)).partner is not None, "a retry of the same run is the same admission"
    again = await acts.admit_start(admit.model_copy(update={"run_id": "run-2"}))
    assert again.partner is None and "already used" in (again.message or "")
    late = await acts.admit_start(admit.model_copy(update={"requested_at": made + timedelta(hours=1)}))
    assert late.partner is None and "expired" in (late.message or "")
    records.dispose()


async def test_the_customer_page_holds_no_signing_key() -> None:
    settings = load(env={"PARTNERFLOW_TEMPORAL__CLOUDS": "[public]"})
    assert (await Relationships.from_settings(settings, lazy=True)).signer is None
