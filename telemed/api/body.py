"""Reading and validating JSON request bodies at the edge, before anything is touched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable

from aiohttp import web

from telemed.api.problems import ProblemError

Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Field:
    name: str
    kind: type
    required: bool = True
    choices: tuple[str, ...] | None = None
    max_length: int = 200
    check: Check | None = None


def iso_date(value: str) -> str | None:
    try:
        date.fromisoformat(value)
    except ValueError:
        return "must be a date like 1970-01-31"
    return None


def iso_datetime(value: str) -> str | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "must be a date and time like 2026-11-23T09:30:00+08:00"
    return None if parsed.tzinfo is not None else "must include a UTC offset"


async def read_json(request: web.Request) -> Any:
    """The parsed body; 415 for another media type, 400 for malformed JSON, 413 if too large."""
    if request.content_type != "application/json":
        raise ProblemError(415, "Unsupported Media Type", "send the body as application/json")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProblemError(400, "Bad Request", f"the body is not valid JSON: {exc}") from None


def _field_problem(spec: Field, value: Any) -> str | None:
    if spec.kind is int and isinstance(value, bool):
        return "must be an integer"
    if not isinstance(value, spec.kind):
        return f"must be {'a string' if spec.kind is str else 'of type ' + spec.kind.__name__}"
    if isinstance(value, str):
        if spec.required and not value.strip():
            return "must not be empty"
        if len(value) > spec.max_length:
            return f"must be at most {spec.max_length} characters"
    if spec.choices is not None and value not in spec.choices:
        return f"must be one of {', '.join(spec.choices)}"
    return spec.check(value) if spec.check else None


def validate(body: Any, fields: list[Field]) -> dict[str, Any]:
    """Check every field at once and report all problems together (422)."""
    if not isinstance(body, dict):
        raise ProblemError(422, "Unprocessable Content", "the body must be a JSON object")
    known = {spec.name for spec in fields}
    errors = [{"field": name, "problem": "is not a known field"} for name in body if name not in known]
    values: dict[str, Any] = {}
    for spec in fields:
        if body.get(spec.name) is None:
            if spec.required:
                errors.append({"field": spec.name, "problem": "is required"})
            continue
        problem = _field_problem(spec, body[spec.name])
        if problem:
            errors.append({"field": spec.name, "problem": problem})
        else:
            values[spec.name] = body[spec.name]
    if errors:
        raise ProblemError(422, "Unprocessable Content", "the request has invalid fields",
                           errors=errors)
    return values


async def parse(request: web.Request, fields: list[Field]) -> dict[str, Any]:
    return validate(await read_json(request), fields)
