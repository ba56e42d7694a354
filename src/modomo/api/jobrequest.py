"""A job-creating POST's request model, built from its JSON body, its query string, or both.

The original Modomo scraper's guide writes ``POST /process/colors?limit=100`` and
``POST /detect/process?image_url=...``: every field of a job request may also come as a query
parameter of the same name, and the body may be absent or ``{}``. The fields are merged and
validated by the request's own pydantic model, so the query's values meet the same
constraints as the body's. Nothing is silently ignored:

- a query parameter the model has no field for answers 422 naming it (``loc: ["query", name]``);
- a field given both in the body and in the query must agree (compared after each is parsed
  as the field's type, so ``?limit=2`` agrees with ``{"limit": 2}``), else 422 naming it;
- a scalar field given twice in the query answers 422;
- a list field takes repeated parameters (``?room_types=kitchen&room_types=bedroom``) or
  comma-separated values (``?room_types=kitchen,bedroom``);
- a validation error locates its field where it came from: ``["query", "limit"]`` or
  ``["body", "limit"]``.

The credential (and its rate limit) is checked before the body is read: the dependency
depends on :func:`modomo.api.ratelimit.enqueue_limit`. Routes pass
:meth:`JobRequest.openapi_extra` to their decorator, so the schema documents the query
parameters and the JSON body (the model's schema, inline).

Usage::

    COLORS = JobRequest(ColorsRequest)

    @router.post("/process/colors", status_code=202, openapi_extra=COLORS.openapi_extra())
    def process_colors(
        principal: Annotated[Principal, Depends(enqueue_limit)],
        body: Annotated[ColorsRequest, Depends(COLORS.dependency)],
    ) -> Accepted: ...
"""

from __future__ import annotations

import copy
import email.message
import json
from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from modomo.api.keys import Principal
from modomo.api.ratelimit import enqueue_limit

__all__ = ["JobRequest"]

M = TypeVar("M", bound=BaseModel)


def _error(loc: Sequence[str | int], kind: str, msg: str, value: Any = None) -> dict[str, Any]:
    return {"type": kind, "loc": tuple(loc), "msg": msg, "input": value}


def _scalar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's JSON schema without its ``null`` branch (a query cannot say null)."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [o for o in options if o != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    if len(kept) == 1:
        return {**rest, **kept[0]}
    return {**rest, "anyOf": kept}


class JobRequest(Generic[M]):
    """FastAPI dependency: the caller's ``model`` from its body merged with its query string.

    Raises (when called):
        RequestValidationError: 422 for an unknown query parameter, a field whose body and
            query values disagree, a body that is not a JSON object, or a field the model
            refuses (located in the query or the body, where the value came from).
    """

    def __init__(self, model: type[M]) -> None:
        self.model = model
        schema = model.model_json_schema()
        if "$defs" in schema:  # nested models would need components; none has them yet
            raise TypeError(f"{model.__name__}: nested models are not supported here")
        self.schema = schema
        properties: dict[str, Any] = schema.get("properties", {})
        self.lists = frozenset(
            name
            for name, field in properties.items()
            if _scalar_schema(field).get("type") == "array"
        )
        # each field's type with its constraints (not the model's validators): to tell
        # whether a body value and a query value agree
        self.adapters: dict[str, TypeAdapter[Any]] = {
            name: TypeAdapter(
                Annotated[(field.annotation, *field.metadata)]  # type: ignore[arg-type]
                if field.metadata
                else field.annotation
            )
            for name, field in model.model_fields.items()
        }
        self.dependency = self._dependency()

    # -- the schema ------------------------------------------------------------------------

    def openapi_extra(self) -> dict[str, Any]:
        """The route's ``openapi_extra``: the fields as query parameters and the JSON body."""
        properties: dict[str, Any] = self.schema.get("properties", {})
        required = set(self.schema.get("required", []))
        parameters = []
        for name, field in properties.items():
            field_schema = _scalar_schema(copy.deepcopy(field))
            notes = [field_schema.pop("description", None)]
            notes.append("Also accepted in the JSON body; if both are given they must agree.")
            if name in required:
                notes.append("Required, in the query or the body.")
            if name in self.lists:
                notes.append("Repeat the parameter or separate the values by commas.")
            parameter: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": False,
                "schema": field_schema,
                "description": " ".join(n for n in notes if n),
            }
            if name in self.lists:
                parameter.update(style="form", explode=True)
            parameters.append(parameter)
        return {
            "parameters": parameters,
            "requestBody": {
                "required": False,
                "description": "The request's fields as a JSON object; each may instead be "
                "given as a query parameter of the same name.",
                "content": {"application/json": {"schema": copy.deepcopy(self.schema)}},
            },
        }

    # -- the dependency --------------------------------------------------------------------

    def _dependency(self) -> Any:
        async def job_request(
            request: Request, _principal: Annotated[Principal, Depends(enqueue_limit)]
        ) -> Any:
            body = await _json_object(request)
            query: dict[str, list[str]] = {}
            for key, value in request.query_params.multi_items():
                query.setdefault(key, []).append(value)
            # validators may resolve a URL's host: off the event loop
            return await run_in_threadpool(self.build, body, query)

        job_request.__doc__ = f"A {self.model.__name__} from the JSON body and query string."
        return job_request

    def build(self, body: dict[str, Any], query: dict[str, list[str]]) -> M:
        """Validate ``body`` merged with ``query`` (each key's values, in order) as the model.

        Raises:
            RequestValidationError: see the class.
        """
        fields = self.model.model_fields
        errors: list[dict[str, Any]] = []
        from_query: dict[str, Any] = {}
        for name, values in query.items():
            if name not in fields:
                errors.append(
                    _error(
                        ("query", name),
                        "extra_forbidden",
                        f"unknown query parameter {name!r}: this endpoint takes "
                        + ", ".join(sorted(fields)),
                        values[0] if len(values) == 1 else values,
                    )
                )
            elif name in self.lists:
                from_query[name] = [part for v in values for part in v.split(",")]
            elif len(values) > 1:
                errors.append(
                    _error(("query", name), "value_error", f"{name} given more than once", values)
                )
            else:
                from_query[name] = values[0]
        for name in sorted(from_query.keys() & body.keys()):
            errors.extend(self._agreement(name, body[name], from_query[name]))
        if errors:
            raise RequestValidationError(errors)
        merged = {**from_query, **body}
        try:
            return self.model.model_validate(merged)
        except ValidationError as exc:
            raise RequestValidationError(
                [self._located(e, body, from_query) for e in exc.errors(include_url=False)]
            ) from None

    def _agreement(self, name: str, in_body: Any, in_query: Any) -> list[dict[str, Any]]:
        adapter = self.adapters[name]
        parsed: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for where, value in (("body", in_body), ("query", in_query)):
            try:
                parsed[where] = adapter.validate_python(value)
            except ValidationError as exc:
                errors.extend(
                    {**e, "loc": (where, name, *e["loc"])} for e in exc.errors(include_url=False)
                )
        if errors:
            return errors
        if parsed["body"] == parsed["query"]:
            return []
        return [
            _error(
                ("query", name),
                "value_error",
                f"{name} is given in both the body ({in_body!r}) and the query string "
                f"({in_query!r}) with different values",
                in_query,
            )
        ]

    @staticmethod
    def _located(error: Any, body: dict[str, Any], from_query: dict[str, Any]) -> dict[str, Any]:
        loc = tuple(error["loc"])
        # a field's error where its value came from; a model-level one in the body unless
        # everything came from the query
        came_from_query = loc[0] in from_query and loc[0] not in body if loc else not body
        where = "query" if came_from_query and from_query else "body"
        return {**error, "loc": (where, *loc)}


async def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body as a dict: ``{}`` when absent, empty or ``null``.

    Raises:
        RequestValidationError: the body is not JSON (bad syntax, or another content type,
            as FastAPI's own body handling refuses it), or not an object.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    content_type = request.headers.get("content-type")
    if content_type:
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        is_json = message.get_content_maintype() == "application" and (
            subtype == "json" or subtype.endswith("+json")
        )
    else:
        is_json = False
    if not is_json:
        raise RequestValidationError(
            [
                _error(
                    ("body",),
                    "model_attributes_type",
                    "the body must be a JSON object sent as Content-Type: application/json "
                    f"(got {content_type or 'no Content-Type'}); or give the fields as query "
                    "parameters",
                )
            ]
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from None
    except RecursionError:  # nesting deeper than the parser goes
        raise RequestValidationError(
            [_error(("body",), "json_invalid", "JSON nested too deeply")]
        ) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestValidationError(
            [_error(("body",), "dict_type", "the body must be a JSON object", value)]
        )
    return value
