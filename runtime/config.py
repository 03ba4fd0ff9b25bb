"""Configuration: `temporal-dev.yml`, then Temporal's own client configuration (`TEMPORAL_*`,
a named `temporal.toml` profile: `runtime.temporal_env`), then environment overrides,
validated once.

An override names its path with double underscores:
`PARTNERFLOW_SMTP__PORT=2525`, `PARTNERFLOW_RECORDS__URL=postgresql://…`.
A bad value stops the process with a message naming the setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from temporalio.service import TLSConfig

from partnerflow.activities.email import SmtpSettings
from partnerflow.runtime.codec import Keyring, KeyringError
from partnerflow.runtime.keys import Signer
from partnerflow.runtime.temporal_env import TemporalEnvError, temporal_layer
from partnerflow.states.errors import problems
from partnerflow.states.models import Cloud, Timers
from partnerflow.states.names import NAMESPACES
from partnerflow.states.proof import ALGORITHMS, DEFAULT_AUDIENCE, Issuer, Kind, Verifier, key_set

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "temporal-dev.yml"
ENV_PREFIX = "PARTNERFLOW_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


MIN_TOKEN_KEY = 32


def _secret_file(path: str | None, field: str) -> str | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{field}: no such file: {path}")
    return file.read_text().strip()


class TemporalSettings(_Section):
    address: str = "127.0.0.1:7233"
    ui_port: int = 8233
    db_file: str = ".dev/temporal.db"
    clouds: list[Cloud] = [Cloud.PUBLIC, Cloud.USGOV]
    # Temporal Cloud names namespaces `<name>.<account>`: map a cloud to its real name here.
    namespaces: dict[Cloud, str] = {}
    tls: bool = False
    tls_server_name: str | None = None  # SNI, where it differs from the address's host
    rpc_metadata: dict[str, str] = {}  # gRPC headers sent with every call (TEMPORAL_GRPC_META_*)
    tls_client_cert_file: str | None = None  # mTLS (self-hosted or Temporal Cloud)
    tls_client_key_file: str | None = None
    tls_server_ca_file: str | None = None
    api_key_file: str | None = None  # Temporal Cloud API key: from a file ...
    api_key: SecretStr | None = None  # ... or PARTNERFLOW_TEMPORAL__API_KEY, never the YAML file

    @model_validator(mode="after")
    def _consistent(self) -> TemporalSettings:
        if bool(self.tls_client_cert_file) != bool(self.tls_client_key_file):
            raise ValueError("tls_client_cert_file and tls_client_key_file go together")
        for name in ("tls_client_cert_file", "tls_client_key_file", "tls_server_ca_file", "api_key_file"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ValueError(f"{name}: no such file: {value}")
        for cloud, namespace in self.namespaces.items():
            base = NAMESPACES[cloud]
            if namespace != base and not namespace.startswith(base + "."):
                raise ValueError(f"namespaces.{cloud.value} must be {base} or {base}.<account>")
        return self

    def namespace(self, cloud: Cloud) -> str:
        return self.namespaces.get(cloud, NAMESPACES[cloud])

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key.get_secret_value()
        return _secret_file(self.api_key_file, "temporal.api_key_file")

    def tls_config(self) -> TLSConfig | bool:
        wanted = self.tls or self.tls_client_cert_file or self.tls_server_ca_file or self.tls_server_name
        if not (wanted or self.resolved_api_key()):
            return False

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return TLSConfig(
            domain=self.tls_server_name,
            server_root_ca_cert=read(self.tls_server_ca_file),
            client_cert=read(self.tls_client_cert_file),
            client_private_key=read(self.tls_client_key_file),
        )


class WorkerSettings(_Section):
    """Tuning knobs of each worker process (Temporal SDK defaults when unset)."""

    max_concurrent_workflow_tasks: int | None = Field(None, ge=1)
    max_concurrent_activities: int | None = Field(None, ge=1)
    max_concurrent_local_activities: int | None = Field(None, ge=1)
    # Open relationships kept in memory (~0.2 MB each); the rest wait on timers and are
    # replayed when something happens. 250 keeps 10,000 open ones near 150 MB (BENCHMARKS.md).
    max_cached_workflows: int = Field(250, ge=0)
    graceful_shutdown_s: float = Field(25, ge=0)  # SIGTERM: in-flight activities may finish


class RecordsSettings(_Section):
    url: str = "sqlite:///.dev/records.db"


class SmtpConfig(_Section):
    """The mail server; every field but the password's two is a field of `SmtpSettings`."""

    host: str = "127.0.0.1"
    port: int = Field(1025, ge=1, le=65535)
    sender: str = "partnerflow@partnerflow.localhost"
    sender_name: str = "partnerflow"
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None  # PARTNERFLOW_SMTP__PASSWORD, never the YAML file ...
    password_file: str | None = None  # ... or a file (e.g. a mounted secret)
    timeout_s: float = Field(10.0, gt=0)  # each SMTP step
    deadline_s: float = Field(20.0, gt=0)  # the whole conversation: keep it inside the activity's 30 s

    def settings(self) -> SmtpSettings:
        """The mailer's settings: the whole section passed on, the password resolved."""
        fields = self.model_dump(exclude={"password", "password_file"})
        return SmtpSettings(**fields, password=self.resolved_password())

    def resolved_password(self) -> str | None:
        if self.password:
            return self.password.get_secret_value()
        return _secret_file(self.password_file, "smtp.password_file")


class MailSinkSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1025, ge=1, le=65535)
    maildir: str = ".dev/mail"


class InvitationSettings(_Section):
    link_base_url: str = "http://127.0.0.1:8080"
    # The key invitation tokens are made with (HMAC of the invitation's id): every worker
    # must share it, so that a retry after a crash sends the very same email. At least 32
    # characters, e.g. `python -c "import secrets; print(secrets.token_urlsafe(32))"`.
    token_key: SecretStr | None = None  # PARTNERFLOW_INVITATION__TOKEN_KEY, never the YAML file ...
    token_key_file: str | None = None  # ... or a file

    @field_validator("token_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_KEY:
            raise ValueError(f"must be at least {MIN_TOKEN_KEY} characters")
        return value

    def resolved_token_key(self) -> bytes | None:
        key = self.token_key.get_secret_value() if self.token_key else None
        key = key or _secret_file(self.token_key_file, "invitation.token_key_file")
        if key is not None and len(key) < MIN_TOKEN_KEY:
            raise ValueError(f"invitation.token_key_file: must be at least {MIN_TOKEN_KEY} characters")
        return key.encode() if key else None


class PortalSettings(_Section):
    """The customer's acceptance page (the invitation link's target)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    secure_cookies: bool = False  # set true behind HTTPS
    wrong_token_limit: int = Field(10, ge=1)  # wrong tokens per client address ...
    wrong_token_window_s: int = Field(600, ge=1)  # ... per this many seconds
    # Proxies whose X-Forwarded-For is believed (exact addresses); from anyone else it is ignored.
    trusted_proxies: list[str] = []
    max_query_bytes: int = Field(2048, ge=256)  # a longer query string gets 414
    max_body_bytes: int = Field(16384, ge=1024)  # a larger form gets 413
    # Every answer to a link takes at least this long, known or unknown relationship alike.
    min_answer_ms: int = Field(300, ge=0)
    # The key the forms' CSRF values are signed with (PARTNERFLOW_PORTAL__CSRF_KEY): share it
    # between page processes; without it each process makes its own.
    csrf_key: SecretStr | None = None


class IssuerSettings(_Section):
    """A calling service whose assertions the worker believes, for the claims it may make."""

    name: str = Field(min_length=1)
    jwks_file: str  # its public keys, a JSON Web Key Set
    asserts: list[Kind] = Field(min_length=1)  # partner_staff and/or customer_admin
    partners: list[str] | None = None  # the partners it may speak for (unset: any)


class ProofSettings(_Section):
    """Proven actors (SECURITY.md). `trusted` believes whatever a caller says: only for a
    namespace that no one but your own services can reach."""

    mode: Literal["proven", "trusted"] = "proven"
    audience: str = DEFAULT_AUDIENCE
    max_lifetime_s: int = Field(300, ge=10, le=3600)
    issuers: list[IssuerSettings] = []  # none, in proven mode: every request is refused

    def verifier(self, resolve: Any) -> Verifier:
        """The worker's verifier, keys read now: a bad key set stops the worker, naming it."""
        issuers = {}
        for i, issuer in enumerate(self.issuers):
            where = f"proof.issuers[{i}].jwks_file"
            text = _secret_file(str(resolve(issuer.jwks_file)), where)
            try:
                keys = key_set(text or "")
            except Exception as error:  # PyJWT raises several kinds: all mean an unusable key set
                raise ConfigError(f"{where}: not a usable JSON Web Key Set ({type(error).__name__})") from None
            if any(k.algorithm_name not in ALGORITHMS for k in keys.keys):
                raise ConfigError(f"{where}: keys must sign with {', '.join(ALGORITHMS)}")
            partners = frozenset(p.lower() for p in issuer.partners) if issuer.partners is not None else None
            issuers[issuer.name] = Issuer(issuer.name, keys, frozenset(issuer.asserts), partners)
        return Verifier(self.mode, self.audience, issuers, timedelta(seconds=self.max_lifetime_s))


class SignerSettings(_Section):
    """How partnerflow's own CLI and client sign for the user they are given (unset: they do not)."""

    issuer: str | None = None
    key_file: str | None = None  # the private key (PEM), readable by its owner only

    def signer(self, resolve: Any, audience: str) -> Signer | None:
        if not self.issuer or not self.key_file:
            return None
        path = resolve(self.key_file)
        if not path.is_file():
            raise ConfigError(f"signer.key_file: no such file: {self.key_file} (make run makes a development key)")
        return Signer.from_file(self.issuer, path, audience=audience)


class MetricsSettings(_Section):
    # host:port of the worker's Prometheus endpoint (/metrics); empty turns it off.
    prometheus: str = "127.0.0.1:9464"


class TracingSettings(_Section):
    """OpenTelemetry export (runtime.tracing): off unless an OTLP/HTTP endpoint is given here or in
    OpenTelemetry's own OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT."""

    otlp_endpoint: str | None = None  # e.g. http://collector:4318/v1/traces


class EncryptionSettings(_Section):
    """Personal data sealed in Temporal with AES-GCM (runtime.codec); unset: payloads are plain JSON.
    The keyring is JSON, `{"active": id, "keys": {id: base64 of 32 bytes}}`: every worker, client
    and codec server of a deployment holds the same one."""

    keys: SecretStr | None = None  # PARTNERFLOW_ENCRYPTION__KEYS, never the YAML file ...
    keys_file: str | None = None  # ... or a file

    def keyring(self, resolve: Any) -> Keyring | None:
        if self.keys is not None:
            text, where = self.keys.get_secret_value(), "PARTNERFLOW_ENCRYPTION__KEYS"
        elif self.keys_file:
            path = resolve(self.keys_file)
            if not path.is_file():
                raise ConfigError(f"encryption.keys_file: no such file: {self.keys_file} (make run makes one)")
            text, where = path.read_text(), "encryption.keys_file"
        else:
            return None
        try:
            return Keyring.parse(text, where)
        except KeyringError as error:
            raise ConfigError(str(error)) from None


class CodecAccessSettings(_Section):
    """Who may open payloads: a bearer token (a JWT) from your identity provider, as the Web UI
    passes the signed-in user's access token ("pass access token", to an HTTPS endpoint) and the
    `temporal` CLI sends `--codec-auth`."""

    issuer: str = Field(min_length=1)  # the token's iss
    audience: str = Field(min_length=1)  # the token's aud
    jwks_url: str | None = None  # the provider's public keys (fetched, cached) ...
    jwks_file: str | None = None  # ... or a JSON Web Key Set on disk
    # Claims a token must carry: equal, or (a list claim) containing the value, e.g. {groups: temporal-ops}.
    required_claims: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_key_source(self) -> CodecAccessSettings:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks_url and jwks_file")
        return self


class CodecServerSettings(_Section):
    """The Web UI's codec server (`python -m partnerflow.codecserver`): whoever it answers reads
    personal data. Unset `access`, it answers anyone who reaches it (make run: 127.0.0.1 only)."""

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)
    # The Web UI origins whose pages may call it (unset: the dev server's UI on temporal.ui_port).
    ui_origins: list[str] = []
    access: CodecAccessSettings | None = None


class EventsSettings(_Section):
    """Webhook delivery: each event is retried this long (then a dead letter), waits growing to
    `max_interval`. Partner Center gives up after 10 tries; three days outlast a long weekend."""

    retry_window: timedelta = timedelta(days=3)
    max_interval: timedelta = timedelta(hours=1)


class LogSettings(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Section):
    temporal: TemporalSettings = TemporalSettings()
    records: RecordsSettings = RecordsSettings()
    worker: WorkerSettings = WorkerSettings()
    smtp: SmtpConfig = SmtpConfig()
    mail_sink: MailSinkSettings = MailSinkSettings()
    tracing: TracingSettings = TracingSettings()
    invitation: InvitationSettings = InvitationSettings()
    portal: PortalSettings = PortalSettings()
    timers: Timers = Timers()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    proof: ProofSettings = ProofSettings()
    signer: SignerSettings = SignerSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    codec_server: CodecServerSettings = CodecServerSettings()
    events: EventsSettings = EventsSettings()

    def verifier(self) -> Verifier:
        return self.proof.verifier(self.resolve)

    def keyring(self) -> Keyring | None:
        return self.encryption.keyring(self.resolve)

    def ui_origins(self) -> list[str]:
        ui = self.temporal.ui_port
        return self.codec_server.ui_origins or [f"http://127.0.0.1:{ui}", f"http://localhost:{ui}"]

    def signer_for_cli(self) -> Signer | None:
        return self.signer.signer(self.resolve, self.proof.audience)

    def resolve(self, path: str) -> Path:
        """Relative paths in the file are relative to the project root."""
        p = Path(path)
        return p if p.is_absolute() else ROOT / p

    @property
    def records_url(self) -> str:
        url = self.records.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url


class ConfigError(Exception):
    """The configuration cannot be used; the message names the setting."""


def _overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        # Strings, so pydantic coerces by the field type; a list or mapping is written as YAML.
        # A secret is always a string, and no error ever quotes a value: only its name.
        secret = tuple(path) in SECRETS
        if secret or not value.startswith(("[", "{")):
            node[path[-1]] = value
            continue
        try:
            node[path[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{name}: not valid YAML (a list or mapping)") from None
    return tree


def _clouds(raw: dict[str, Any]) -> list[Cloud]:
    """The clouds the file and the overrides say this deployment serves (defaults: all)."""
    named = (raw.get("temporal") or {}).get("clouds") if isinstance(raw.get("temporal"), dict) else None
    try:
        return [Cloud(c) for c in named] if isinstance(named, list) else list(TemporalSettings().clouds)
    except ValueError:
        return list(TemporalSettings().clouds)  # validation names the bad cloud


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


#: Secrets a config file must not hold: they come from the environment or a file.
SECRETS = {
    ("smtp", "password"): "PARTNERFLOW_SMTP__PASSWORD",
    ("temporal", "api_key"): "PARTNERFLOW_TEMPORAL__API_KEY",
    ("invitation", "token_key"): "PARTNERFLOW_INVITATION__TOKEN_KEY",
    ("portal", "csrf_key"): "PARTNERFLOW_PORTAL__CSRF_KEY",
    ("encryption", "keys"): "PARTNERFLOW_ENCRYPTION__KEYS",
}


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    path = path or Path(env.get("PARTNERFLOW_CONFIG", DEFAULT_FILE))
    try:
        raw = yaml.safe_load(path.read_text()) or {} if path.exists() else {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    for (section, key), variable in SECRETS.items():
        if isinstance(raw.get(section), dict) and raw[section].get(key):
            raise ConfigError(
                f"{path}: {section}.{key}: secrets are not kept in the config file;"
                f" set {variable} or {section}.{key}_file"
            )
    overrides = _overrides(env)
    try:
        temporal_env = temporal_layer(env, _clouds(_merge(raw, overrides)))
    except TemporalEnvError as error:
        raise ConfigError(str(error)) from None
    ours = overrides.get("temporal") or {}
    if "api_key" in ours or "api_key_file" in ours:
        temporal_env.pop("api_key", None)  # partnerflow's own key setting wins, file or value
    try:
        layered = _merge(raw, {"temporal": temporal_env} if temporal_env else {})
        return Settings.model_validate(_merge(layered, overrides))
    except ValidationError as error:
        found = "; ".join(f"{p['field']}: {p['rule']}" for p in problems(error))
        raise ConfigError(f"{path}: {found}") from None
