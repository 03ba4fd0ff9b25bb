"""Temporal's own client configuration, as the `temporal` CLI reads it, as one layer of settings.

Read by the SDK's `temporalio.envconfig`: the `TEMPORAL_*` environment variables
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS*`,
`TEMPORAL_GRPC_META_*`), and a `temporal.toml` profile where `TEMPORAL_PROFILE` or
`TEMPORAL_CONFIG_FILE` names one. A developer's default profile is not read unnamed: it
would quietly point `make run` at another cluster.

Order, each overriding the one before: defaults, `temporal-dev.yml`, this layer,
`PARTNERFLOW_TEMPORAL__*`, a command line's `--address`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from temporalio.envconfig import ClientConfigProfile, DataSource

from partnerflow.states.models import Cloud

#: The variables that name a profile to read from a file.
FILE_VARIABLES = ("TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE")


def without_temporal_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less Temporal's client variables: for `make run` and the tests, which run their own server."""
    return {name: value for name, value in env.items() if not name.startswith("TEMPORAL_")}


class TemporalEnvError(ValueError):
    """Temporal's own configuration cannot be used as it stands: the message names the variable."""


def temporal_layer(env: Mapping[str, str], clouds: Sequence[Cloud]) -> dict[str, Any]:
    """The `temporal` settings Temporal's own configuration gives (empty when it gives none)."""
    if not any(name.startswith("TEMPORAL_") for name in env):
        return {}
    named = any(env.get(name) for name in FILE_VARIABLES)
    try:
        profile = ClientConfigProfile.load(
            profile=env.get("TEMPORAL_PROFILE") or None, disable_file=not named, override_env_vars=dict(env)
        )
    except Exception as error:  # the SDK's loader: a missing profile or file, bad TOML
        # Its first line only: the next ones quote the file, and a bad line may be an API key.
        said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TemporalEnvError(f"Temporal client configuration ({', '.join(FILE_VARIABLES)}): {said}") from None
    layer: dict[str, Any] = {}
    if profile.address:
        layer["address"] = profile.address
    if profile.api_key:
        layer["api_key"] = profile.api_key
    if profile.namespace:
        if len(clouds) != 1:
            raise TemporalEnvError(
                f"TEMPORAL_NAMESPACE (or a profile's namespace) names one namespace, but this deployment serves"
                f" {', '.join(c.value for c in clouds)}: set temporal.namespaces.<cloud> instead"
            )
        layer["namespaces"] = {clouds[0].value: profile.namespace}
    if profile.grpc_meta:
        layer["rpc_metadata"] = dict(profile.grpc_meta)
    tls = profile.tls
    if tls is not None:
        if tls.disabled is not None:
            layer["tls"] = not tls.disabled
        if tls.server_name:
            layer["tls_server_name"] = tls.server_name
        for ours, source in (
            ("tls_server_ca_file", tls.server_root_ca_cert),
            ("tls_client_cert_file", tls.client_cert),
            ("tls_client_key_file", tls.client_private_key),
        ):
            if source is not None:
                layer[ours] = _path(source, ours)
    return layer


def _path(source: DataSource, ours: str) -> str:
    if isinstance(source, Path):
        return str(source)
    raise TemporalEnvError(
        f"temporal.{ours}: a certificate or key given inline (TEMPORAL_TLS_*_DATA) is not supported; give its file"
        " (TEMPORAL_TLS_*_PATH)"
    )
