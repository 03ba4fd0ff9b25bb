"""Personal data sealed in Temporal: the AES-GCM codec, its keyring, the codec server.

The whole path (make run's worker sealing, the Web UI opening through the codec server in a
real browser, `temporal workflow show` without the codec seeing no address) is in
tests/test_make_run.py.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from smtplib import SMTPRecipientsRefused

import httpx
import pytest
from google.protobuf import json_format
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from partnerflow.codecserver import Access, create_app
from partnerflow.runtime.codec import ENCODING, KEY_ID, CodecError, EncryptionCodec, Keyring, data_converter_for
from partnerflow.runtime.config import CodecAccessSettings, ConfigError, load
from partnerflow.runtime.converter import data_converter
from partnerflow.runtime.keys import Signer, new_key_pair
from partnerflow.states.models import StartRelationship
from partnerflow.testing import start_input

EMAIL = "admin@contoso.example"
UI = "http://127.0.0.1:8233"


def plain(text: str) -> Payload:
    return data_converter.payload_converter.to_payloads([text])[0]


async def test_a_sealed_payload_holds_nothing_readable_and_opens_to_the_same_payload() -> None:
    codec = EncryptionCodec(Keyring.generate("k1"))
    original = plain(EMAIL)
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"k1"
    assert EMAIL.encode() not in sealed.SerializeToString() and b"json" not in sealed.SerializeToString()
    assert (await codec.decode([sealed])) == [original]
    [again] = await codec.encode([original])
    assert again.data != sealed.data, "a fresh nonce per payload"


async def test_after_a_rotation_new_payloads_use_the_new_key_and_old_ones_still_open() -> None:
    old = Keyring.generate("2026-01")
    [before] = await EncryptionCodec(old).encode([plain(EMAIL)])
    rotated = old.rotated("2026-07")
    codec = EncryptionCodec(Keyring.parse(rotated.to_json()))
    [after] = await codec.encode([plain(EMAIL)])
    assert after.metadata[KEY_ID] == b"2026-07"
    assert [p.data for p in await codec.decode([before, after])] == [plain(EMAIL).data] * 2
    with pytest.raises(CodecError, match="'2026-07', which this keyring does not hold"):
        await EncryptionCodec(old).decode([after])


async def test_an_altered_payload_or_a_swapped_key_id_does_not_open() -> None:
    keyring = Keyring.generate("k1").rotated("k2")
    codec = EncryptionCodec(keyring)
    [sealed] = await codec.encode([plain(EMAIL)])
    flipped = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    swapped = Payload(metadata={**sealed.metadata, KEY_ID: b"k1"}, data=sealed.data)
    for bad in (flipped, swapped):
        with pytest.raises(CodecError, match="does not open"):
            await codec.decode([bad])


async def test_a_payload_from_before_encryption_passes_through() -> None:
    history = plain(EMAIL)
    assert await EncryptionCodec(Keyring.generate()).decode([history]) == [history]


async def test_the_sealing_converter_round_trips_a_start_and_seals_foreign_failure_messages() -> None:
    converter = data_converter_for(Keyring.generate())
    start = StartRelationship.model_validate(start_input())
    payloads = await converter.encode([start])
    assert EMAIL.encode() not in payloads[0].SerializeToString()
    assert (await converter.decode(payloads, [StartRelationship]))[0] == start
    failure = Failure()
    await converter.encode_failure(SMTPRecipientsRefused({EMAIL: (550, b"no such user")}), failure)
    assert EMAIL.encode() not in failure.SerializeToString() and failure.message == "Encoded failure"
    assert EMAIL in str(await converter.decode_failure(failure))
    # Our own refusals name a field and a rule, never a value: readable by any caller.
    ours = Failure()
    await converter.encode_failure(ApplicationError("customer.company: Field required", type="InvalidInput"), ours)
    assert ours.message == "customer.company: Field required"
    assert data_converter_for(None) is data_converter


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("not json", "not JSON"),
        ("{}", "keys: a mapping"),
        ('{"active": "k1", "keys": {"k1": "c2hvcnQ="}}', "keys.k1: must be the base64 of 32"),
        ('{"active": "k1", "keys": {"k 1": "' + "A" * 44 + '"}}', "keys: a key id is"),
        ('{"active": "k2", "keys": {"k1": "' + base64.b64encode(bytes(32)).decode() + '"}}', "active: must name"),
    ],
)
def test_a_bad_keyring_is_refused_naming_the_field_never_a_key(text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names) as refused:
        load(env={"PARTNERFLOW_ENCRYPTION__KEYS": text}).keyring()
    assert "A" * 20 not in str(refused.value)


def test_the_keyring_comes_from_the_environment_or_a_file_never_the_config_file(tmp_path: Path) -> None:
    keyring = Keyring.generate("env-key")
    assert load(env={"PARTNERFLOW_ENCRYPTION__KEYS": keyring.to_json()}).keyring() == keyring
    keyring.write(tmp_path / "keys.json")
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0
    assert load(env={"PARTNERFLOW_ENCRYPTION__KEYS_FILE": str(tmp_path / "keys.json")}).keyring() == keyring
    with pytest.raises(ConfigError, match=r"encryption\.keys_file: no such file"):
        load(env={"PARTNERFLOW_ENCRYPTION__KEYS_FILE": str(tmp_path / "missing.json")}).keyring()
    config = tmp_path / "partnerflow.yml"
    config.write_text(f"encryption:\n  keys: '{keyring.to_json()}'\n")
    with pytest.raises(ConfigError, match=r"encryption\.keys: secrets are not kept in the config file"):
        load(config, env={})
    assert load(env={"PARTNERFLOW_ENCRYPTION__KEYS_FILE": ""}).keyring() is None


# --- the codec server ----------------------------------------------------------------


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate("k1")


def web(keyring: Keyring) -> httpx.AsyncClient:
    app = create_app(keyring, [UI])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test")


def as_json(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


async def test_the_codec_server_opens_what_the_worker_sealed_and_seals_what_the_ui_sends(keyring: Keyring) -> None:
    [sealed] = await EncryptionCodec(keyring).encode([plain(EMAIL)])
    headers = {"Content-Type": "application/json", "X-Namespace": "relationships", "Origin": UI}
    async with web(keyring) as codec:
        # The UI adds a query string and may sit under a prefix: only the last segment counts.
        opened = await codec.post("/prefix/decode?preserveStorageRefs=true", content=as_json(sealed), headers=headers)
        assert opened.status_code == 200, opened.text
        assert opened.headers["cache-control"] == "no-store"
        assert opened.headers["access-control-allow-origin"] == UI
        [payload] = json_format.Parse(opened.text, Payloads()).payloads
        assert json.loads(payload.data) == EMAIL
        resealed = await codec.post("/encode", content=as_json(plain(EMAIL)), headers=headers)
        [back] = json_format.Parse(resealed.text, Payloads()).payloads
        assert back.metadata["encoding"] == ENCODING and await EncryptionCodec(keyring).decode([back]) == [plain(EMAIL)]


async def test_the_codec_server_answers_the_ui_s_preflight_and_no_other_origin(keyring: Keyring) -> None:
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"}
    async with web(keyring) as codec:
        ours = await codec.options("/decode", headers={**ask, "Origin": UI})
        assert ours.status_code == 200 and ours.headers["access-control-allow-origin"] == UI
        theirs = await codec.options("/decode", headers={**ask, "Origin": "https://evil.example"})
        assert theirs.status_code == 400 and "access-control-allow-origin" not in theirs.headers
        sealed = as_json(*(await EncryptionCodec(keyring).encode([plain(EMAIL)])))
        posted = await codec.post("/decode", content=sealed, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in posted.headers, "a page of another origin cannot read it"


async def test_the_codec_server_refuses_bad_requests_naming_the_rule(keyring: Keyring) -> None:
    [foreign] = await EncryptionCodec(Keyring.generate("other")).encode([plain(EMAIL)])
    async with web(keyring) as codec:
        assert (await codec.post("/open", content=as_json())).status_code == 404
        bad = await codec.post("/decode", content="<html>")
        assert bad.status_code == 400 and "body: must be a Payloads document" in bad.json()["error"]
        unknown = await codec.post("/decode", content=as_json(foreign))
        assert unknown.status_code == 400 and "'other', which this keyring does not hold" in unknown.json()["error"]
        huge = await codec.post("/decode", content=b"x" * (8 * 1024 * 1024 + 1))
        assert huge.status_code == 413
        assert (await codec.get("/decode")).status_code == 405


# --- who may open: bearer tokens of the organisation's identity provider ------------------


@pytest.fixture
def operators(tmp_path: Path) -> tuple[Access, Signer, Signer]:
    """The codec server believing one identity provider; a token of it and one of another."""
    idp_key, idp_jwks = new_key_pair(tmp_path, "idp")
    other_key, _ = new_key_pair(tmp_path, "other")
    settings = CodecAccessSettings(
        issuer="https://idp.example", audience="temporal-ui", jwks_file=str(idp_jwks), required_claims={"groups": "ops"}
    )
    access = Access.from_settings(settings, Path)
    idp = Signer.from_file("https://idp.example", idp_key, audience="temporal-ui")
    other = Signer.from_file("https://idp.example", other_key, audience="temporal-ui")
    return access, idp, other


async def test_with_access_set_only_an_operator_s_valid_token_opens_payloads(
    keyring: Keyring, operators: tuple[Access, Signer, Signer]
) -> None:
    access, idp, other = operators
    sealed = as_json(*(await EncryptionCodec(keyring).encode([plain(EMAIL)])))
    ops = {"sub": "olga@partnerflow.example", "groups": ["staff", "ops"]}
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    wrong_audience = dataclasses.replace(idp, audience="another-app")
    cases = [
        (None, 401, "a bearer token from https://idp.example is required"),
        ("Basic b2xnYTpwdw==", 401, "a bearer token"),
        (other.sign(ops), 401, "not valid"),
        (wrong_audience.sign(ops), 401, "not valid (InvalidAudienceError)"),
        (idp.sign(ops, now=long_ago), 401, "not valid (ExpiredSignatureError)"),
        (idp.sign({"sub": "sam@partnerflow.example", "groups": ["staff"]}), 403, "groups must include ops"),
    ]
    app = create_app(keyring, [UI], access)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec.test") as codec:
        for token, status, rule in cases:
            headers = {"Authorization": token if " " in (token or " ") else f"Bearer {token}"} if token else {}
            refused = await codec.post("/decode", content=sealed, headers=headers)
            assert (refused.status_code, rule in refused.json()["error"]) == (status, True), (token, refused.text)
            assert EMAIL not in refused.text
        opened = await codec.post("/decode", content=sealed, headers={"Authorization": f"Bearer {idp.sign(ops)}"})
        assert (
            opened.status_code == 200 and EMAIL.encode() in json_format.Parse(opened.text, Payloads()).payloads[0].data
        )
        # The UI's preflight carries no token: it is answered, and the POST then needs one.
        ask = {"Origin": UI, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        assert (await codec.options("/decode", headers=ask)).status_code == 200


def test_access_needs_one_key_source_and_a_readable_key_set(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one of jwks_url and jwks_file"):
        CodecAccessSettings(issuer="i", audience="a")
    (tmp_path / "bad.json").write_text("{}")
    settings = CodecAccessSettings(issuer="i", audience="a", jwks_file=str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match=r"codec_server\.access\.jwks_file: not a readable JSON Web Key Set"):
        Access.from_settings(settings, Path)
