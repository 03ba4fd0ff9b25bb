"""Configuration: the file, environment overrides, secrets only from the environment or files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from partnerflow.runtime.config import ConfigError, load
from partnerflow.states.models import Cloud


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "partnerflow.yml"
    path.write_text(text)
    return path


def test_the_shipped_file_loads_with_its_defaults() -> None:
    settings = load(env={})
    assert settings.temporal.address == "127.0.0.1:7233"
    assert settings.temporal.namespace(Cloud.USGOV) == "relationships-usgov"
    assert settings.records_url.startswith("sqlite:////") and settings.records_url.endswith(".dev/records.db")


def test_environment_overrides_any_key(tmp_path: Path) -> None:
    env = {
        "PARTNERFLOW_SMTP__PORT": "2525",
        "PARTNERFLOW_SMTP__STARTTLS": "true",
        "PARTNERFLOW_TEMPORAL__CLOUDS": "[public]",
        "PARTNERFLOW_RECORDS__URL": "postgresql+psycopg://pf@db.internal/records",
        "PARTNERFLOW_TEMPORAL__NAMESPACES": "{public: relationships.acct1}",
    }
    settings = load(write(tmp_path, "smtp: {host: mail.internal}\n"), env)
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.starttls) == ("mail.internal", 2525, True)
    assert settings.temporal.clouds == [Cloud.PUBLIC]
    assert settings.records_url == "postgresql+psycopg://pf@db.internal/records"
    assert settings.temporal.namespace(Cloud.PUBLIC) == "relationships.acct1"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("smtp: {port: 70000}\n", {}, "smtp.port"),
        ("smtp: {password: hunter2}\n", {}, "set PARTNERFLOW_SMTP__PASSWORD or smtp.password_file"),
        ("temporal: {api_key: abc}\n", {}, "set PARTNERFLOW_TEMPORAL__API_KEY"),
        (
            "temporal: {tls_client_cert_file: /nope.pem}\n",
            {},
            "tls_client_cert_file and tls_client_key_file go together",
        ),
        ("temporal: {api_key_file: /nope}\n", {}, "api_key_file: no such file"),
        ("temporal: {namespaces: {public: other}}\n", {}, "namespaces.public must be relationships"),
        ("invitation: {token_key: hunter2hunter2}\n", {}, "set PARTNERFLOW_INVITATION__TOKEN_KEY"),
        (
            "",
            {"PARTNERFLOW_INVITATION__TOKEN_KEY": "hunter2"},
            "invitation.token_key: must be at least 32",
        ),
        ("bogus: 1\n", {}, "bogus"),
        ("", {"PARTNERFLOW_LOG__FORMAT": "xml"}, "log.format"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), env)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_secrets_come_from_the_environment_or_files_and_never_show(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("key-from-file\n")
    settings = load(
        write(tmp_path, f"temporal: {{api_key_file: {key_file}, namespaces: {{public: relationships.acct1}}}}\n"),
        {"PARTNERFLOW_SMTP__PASSWORD": "hunter2"},
    )
    assert settings.smtp.resolved_password() == "hunter2"
    assert settings.temporal.resolved_api_key() == "key-from-file"
    assert settings.temporal.namespace(Cloud.PUBLIC) == "relationships.acct1"
    assert settings.temporal.tls_config() is not False, "an API key implies TLS"
    assert "hunter2" not in repr(settings) and "key-from-file" not in repr(settings)
    env_key = load(write(tmp_path, ""), {"PARTNERFLOW_TEMPORAL__API_KEY": "k-env"})
    assert env_key.temporal.resolved_api_key() == "k-env" and "k-env" not in repr(env_key)


def test_the_token_key_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    key = "k" * 40
    assert (
        load(write(tmp_path, ""), {"PARTNERFLOW_INVITATION__TOKEN_KEY": key}).invitation.resolved_token_key()
        == key.encode()
    )
    (tmp_path / "key").write_text(key + "\n")
    from_file = load(write(tmp_path, f"invitation: {{token_key_file: {tmp_path / 'key'}}}\n"), {})
    assert from_file.invitation.resolved_token_key() == key.encode()
    assert key not in repr(load(write(tmp_path, ""), {"PARTNERFLOW_INVITATION__TOKEN_KEY": key}))


def test_every_smtp_setting_reaches_the_mailer(tmp_path: Path) -> None:
    """The whole `smtp` section is passed on (it was once copied field by field, and some were lost)."""
    env = {
        "PARTNERFLOW_SMTP__SENDER_NAME": "Fabrikam Partner Desk",
        "PARTNERFLOW_SMTP__TIMEOUT_S": "3.5",
        "PARTNERFLOW_SMTP__DEADLINE_S": "9",
        "PARTNERFLOW_SMTP__PASSWORD": "s3cret",
        "PARTNERFLOW_SMTP__USERNAME": "mailer",
    }
    mailer = load(tmp_path / "none.yml", env).smtp.settings()
    assert (mailer.sender_name, mailer.timeout_s, mailer.deadline_s) == ("Fabrikam Partner Desk", 3.5, 9.0)
    assert (mailer.username, mailer.password) == ("mailer", "s3cret")
    assert "s3cret" not in repr(mailer)


# --- Temporal's own client configuration (TEMPORAL_*, temporal.toml) ---------------------

TOML = """
[profile.default]
address = "default.example:7233"

[profile.staging]
address = "staging.example:7233"
namespace = "relationships.acct1"
api_key = "from-the-profile"

[profile.staging.grpc_meta]
x-team = "partners"
"""


def test_temporal_environment_variables_sit_between_the_file_and_partnerflow_s(tmp_path: Path) -> None:
    standard = {"TEMPORAL_ADDRESS": "temporal.example:7233", "TEMPORAL_API_KEY": "k-standard"}
    settings = load(tmp_path / "none.yml", env=standard)
    t = settings.temporal
    assert (t.address, t.resolved_api_key(), t.tls_config() is not False) == (
        "temporal.example:7233",
        "k-standard",
        True,
    )
    ours = load(tmp_path / "none.yml", env={**standard, "PARTNERFLOW_TEMPORAL__ADDRESS": "ours.example:7233"})
    assert ours.temporal.address == "ours.example:7233"  # partnerflow's own variable wins
    assert load(tmp_path / "none.yml", env={}).temporal.address == "127.0.0.1:7233"  # and without: the file's


def test_a_named_temporal_toml_profile_is_read_and_an_unnamed_default_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "temporal.toml"
    toml.write_text(TOML)
    one_cloud = {"PARTNERFLOW_TEMPORAL__CLOUDS": "[public]"}
    named = {"TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_PROFILE": "staging", **one_cloud}
    t = load(tmp_path / "none.yml", env=named).temporal
    assert (t.address, t.namespace(Cloud.PUBLIC), t.resolved_api_key()) == (
        "staging.example:7233",
        "relationships.acct1",
        "from-the-profile",
    )
    assert t.rpc_metadata == {"x-team": "partners"}
    # A developer's default profile, where no variable names a file or profile: not read.
    (tmp_path / "config" / "temporalio").mkdir(parents=True)
    (tmp_path / "config" / "temporalio" / "temporal.toml").write_text(TOML)
    home = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    for name, value in home.items():
        monkeypatch.setenv(name, value)  # where the SDK looks for the default file
    assert load(tmp_path / "none.yml", env={**home, "TEMPORAL_X": "1"}).temporal.address == "127.0.0.1:7233"
    named_default = load(tmp_path / "none.yml", env={**home, "TEMPORAL_PROFILE": "default"})
    assert named_default.temporal.address == "default.example:7233"  # the same file, once named


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TEMPORAL_NAMESPACE": "relationships"}, "TEMPORAL_NAMESPACE (or a profile's namespace) names one namespace"),
        ({"TEMPORAL_PROFILE": "nowhere", "TEMPORAL_CONFIG_FILE": "/nonexistent.toml"}, "TEMPORAL_PROFILE"),
        ({"TEMPORAL_TLS_CLIENT_CERT_DATA": "-----BEGIN", "TEMPORAL_TLS_CLIENT_KEY_DATA": "x"}, "inline"),
        (
            {"TEMPORAL_NAMESPACE": "someone-else", "PARTNERFLOW_TEMPORAL__CLOUDS": "[public]"},
            "namespaces.public must be relationships",
        ),
    ],
)
def test_temporal_configuration_that_cannot_be_used_is_named(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path / "none.yml", env=env)


def test_a_broken_temporal_toml_is_named_without_quoting_it(tmp_path: Path) -> None:
    """The SDK's message quotes the bad line, which may be the API key's: only its first line shows."""
    toml = tmp_path / "temporal.toml"
    toml.write_text('[profile.x]\napi_key = "SECRET-KEY-123\n')
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "none.yml", env={"TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_PROFILE": "x"})
    assert "TOML parse error at line 2" in str(caught.value) and "SECRET" not in str(caught.value)


def test_partnerflow_s_own_key_setting_beats_temporal_api_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-our-file")
    env = {"TEMPORAL_API_KEY": "from-temporal-env", "PARTNERFLOW_TEMPORAL__API_KEY_FILE": str(key_file)}
    assert load(tmp_path / "none.yml", env=env).temporal.resolved_api_key() == "from-our-file"
