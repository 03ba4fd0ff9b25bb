"""Personal data sealed before it reaches Temporal: an AES-GCM payload codec with keys by id.

Every payload partnerflow's data converter makes is sealed with the keyring's active key:
start inputs, updates and their results, query results, memos, static summaries and
details, activity inputs and results, and failure messages other than partnerflow's own
refusals (which never quote a value). The key's id travels in the payload's metadata and is bound to the ciphertext,
so older keys still open older histories after a rotation. Search attributes are not
payloads of the codec: they hold ids and states only. A payload that is not sealed (a
history from before encryption was turned on) passes through unchanged.

The keyring is JSON, `{"active": "<id>", "keys": {"<id>": "<base64 of 32 bytes>", ...}}`;
`python -m partnerflow.runtime.codec new-key ID` prints one.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter, DefaultFailureConverter, PayloadCodec, PayloadConverter
from temporalio.exceptions import ApplicationError

from partnerflow.runtime.converter import data_converter
from partnerflow.states.names import ErrorType

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce, random per payload
VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyringError(ValueError):
    """The keyring cannot be used; the message names the field, never a key."""


class CodecError(ValueError):
    """A sealed payload does not open: the message names the key id, never the data."""


@dataclass(frozen=True)
class Keyring:
    active: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str, where: str = "keyring") -> Keyring:
        try:
            document = json.loads(text)
        except ValueError:
            raise KeyringError(f"{where}: not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), dict) or not document["keys"]:
            raise KeyringError(
                f'{where}: keys: a mapping of key id to key is required ({{"active": ..., "keys": ...}})'
            )
        keys = {}
        for key_id, encoded in document["keys"].items():
            if not VALID_ID.match(key_id):
                raise KeyringError(f"{where}: keys: a key id is 1-64 letters, digits, '.', '_' or '-'")
            try:
                key = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
            except binascii.Error:
                key = b""
            if len(key) != KEY_BYTES:
                raise KeyringError(f"{where}: keys.{key_id}: must be the base64 of {KEY_BYTES} random bytes")
            keys[key_id] = key
        active = document.get("active")
        if not isinstance(active, str) or active not in keys:
            raise KeyringError(f"{where}: active: must name one of the keys ({', '.join(sorted(keys))})")
        return cls(active, keys)

    @classmethod
    def generate(cls, key_id: str = "k1") -> Keyring:
        return cls(key_id, {key_id: secrets.token_bytes(KEY_BYTES)})

    def rotated(self, key_id: str) -> Keyring:
        """A new active key; the old ones stay to open what they sealed."""
        if not VALID_ID.match(key_id) or key_id in self.keys:
            raise KeyringError(f"key id {key_id!r}: must be new and 1-64 letters, digits, '.', '_' or '-'")
        return Keyring(key_id, {**self.keys, key_id: secrets.token_bytes(KEY_BYTES)})

    def to_json(self) -> str:
        keys = {key_id: base64.b64encode(key).decode() for key_id, key in self.keys.items()}
        return json.dumps({"active": self.active, "keys": keys}, indent=2) + "\n"

    def write(self, path: Path) -> None:
        """Readable by its owner only, like every key `make run` keeps."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(self.to_json())


class EncryptionCodec(PayloadCodec):
    def __init__(self, keyring: Keyring) -> None:
        self.active = keyring.active
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self.active.encode()
        sealed = self._ciphers[self.active].encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id}, data=nonce + sealed)

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecError(f"payload sealed with key {key_id[:64]!r}, which this keyring does not hold")
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        except (InvalidTag, ValueError):
            raise CodecError(f"payload does not open with key {key_id!r}: altered, or another key of that id") from None
        return Payload.FromString(plain)


class SealingFailureConverter(DefaultFailureConverter):
    """Failure messages and stack traces sealed too (an SMTP server's refusal can quote an
    address), except partnerflow's own refusals: those name a field and a rule, never a value
    (states.errors), and every caller must read them, the `temporal` CLI included."""

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)
        self._plain = DefaultFailureConverter()

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        if isinstance(exception, ApplicationError) and exception.type in OWN_REFUSALS:
            self._plain.to_failure(exception, payload_converter, failure)
        else:
            super().to_failure(exception, payload_converter, failure)


OWN_REFUSALS = frozenset(ErrorType)


def data_converter_for(keyring: Keyring | None) -> DataConverter:
    """partnerflow's converter, sealing every payload and foreign failure message when there is a keyring."""
    if keyring is None:
        return data_converter
    return dataclasses.replace(
        data_converter, payload_codec=EncryptionCodec(keyring), failure_converter_class=SealingFailureConverter
    )


def ensure_dev_keyring(path: Path) -> None:
    """`make run`'s keyring, made once: never for production."""
    if not path.is_file():
        Keyring.generate("dev-1").write(path)


def main(argv: list[str]) -> int:
    """`new-key ID`: a keyring of one key; `rotate FILE ID`: the file's keyring with a new active key."""
    match argv:
        case ["new-key", key_id]:
            print(Keyring.generate(key_id).to_json(), end="")
        case ["rotate", file, key_id]:
            keyring = Keyring.parse(Path(file).read_text(), file).rotated(key_id)
            keyring.write(Path(file))
            print(f"{file}: active key is now {key_id}; {len(keyring.keys)} keys open older payloads")
        case _:
            print(main.__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
