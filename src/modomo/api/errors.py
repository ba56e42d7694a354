"""Error bodies the app's default handlers cannot write.

A validation error echoes the value it refused (``input``) and its constraint (``ctx``).
Python's JSON reads ``NaN``, ``Infinity`` and ``1e309`` as non-finite floats, which JSON
cannot carry: FastAPI's own handler then fails to serialise its answer and the client gets
500 instead of the 422 naming the field. Here every non-finite float in the error is written
as a string (``"NaN"``, ``"Infinity"``, ``"-Infinity"``), so the answer is the 422 it should
be. (Every float field of the API's requests is bounded on both sides, so a non-finite value
is always refused; ``tests/api/test_front_door.py`` checks that of the OpenAPI document.)
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

__all__ = ["finite", "validation_error_handler"]


def finite(value: Any) -> Any:
    """``value`` (JSON-able) with each non-finite float replaced by its name as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 with the errors as FastAPI writes them, non-finite values as strings."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": finite(jsonable_encoder(exc.errors()))})
