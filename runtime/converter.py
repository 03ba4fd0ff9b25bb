"""The data converter: pydantic JSON, with bad input turned into a clean rejection.

Temporal decodes a workflow's start input and each update's payload before our
code runs. A `pydantic.ValidationError` there would fail the workflow *task* (and
retry forever) or reach the caller as "Failed decoding arguments". Raising an
`ApplicationError` instead fails the start (nothing written) or rejects the update
(no history), with a message naming each field and its rule.
"""

from __future__ import annotations

from typing import Any

import pydantic
import temporalio.api.common.v1
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)
from temporalio.exceptions import ApplicationError

from partnerflow.states.errors import describe
from partnerflow.states.names import ErrorType


class _ValidatingJSONConverter(PydanticJSONPlainPayloadConverter):
    def from_payload(self, payload: temporalio.api.common.v1.Payload, type_hint: type | None = None) -> Any:
        try:
            return super().from_payload(payload, type_hint)
        except pydantic.ValidationError as error:
            raise ApplicationError(describe(error), type=ErrorType.INVALID_INPUT.value, non_retryable=True) from None


class PayloadConverter(CompositePayloadConverter):
    def __init__(self) -> None:
        json_converter = _ValidatingJSONConverter()
        super().__init__(
            *(
                json_converter if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


data_converter = DataConverter(payload_converter_class=PayloadConverter)
