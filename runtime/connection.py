"""One way to reach Temporal for every process (worker, client, CLI, page): address,
namespace per cloud, TLS or API key, and the pydantic data converter (sealing personal data
when the configuration holds a keyring)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime

from partnerflow.runtime import tracing
from partnerflow.runtime.codec import data_converter_for
from partnerflow.runtime.config import Settings
from partnerflow.states.models import Cloud


async def connect(settings: Settings, cloud: Cloud, runtime: Runtime | None = None, *, lazy: bool = False) -> Client:
    t = settings.temporal
    return await Client.connect(
        t.address,
        namespace=t.namespace(cloud),
        data_converter=data_converter_for(settings.keyring()),  # sealed, when there is a keyring
        tls=t.tls_config(),
        api_key=t.resolved_api_key(),
        rpc_metadata=t.rpc_metadata,
        interceptors=tracing.interceptors(),  # a worker made on this client traces too
        runtime=runtime,
        lazy=lazy,
    )
