"""RFC 9457 problem details for every error, whatever raised it."""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from telemed import audit
from telemed.api.context import DATABASE
from telemed.auth import TokenError
from telemed.caller import InvalidRequest
from telemed.permissions import Forbidden
from telemed.store import Conflict, Database, NotFound
from telemed.workflow import TransitionError

PROBLEM_TYPE = "application/problem+json"
log = logging.getLogger(__name__)


class ProblemError(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str | None = None,
                 **extensions: Any) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.extensions = extensions


def problem_response(request: web.Request, status: int, title: str, detail: str | None = None,
                     headers: dict[str, str] | None = None, **extensions: Any) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "instance": request.path}
    if detail:
        body["detail"] = detail
    body.update(extensions)
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE,
                        headers=headers)


def _from_exception(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, ProblemError):
        return problem_response(request, exc.status, exc.title, exc.detail, **exc.extensions)
    if isinstance(exc, TokenError):
        return problem_response(request, 401, "Unauthorized", str(exc),
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if isinstance(exc, Forbidden):
        return problem_response(request, 403, "Forbidden", exc.reason)
    if isinstance(exc, NotFound):
        return problem_response(request, 404, "Not Found", str(exc))
    if isinstance(exc, TransitionError):
        return problem_response(request, 409, "Conflict", exc.reason, state=exc.state,
                                action=exc.action, allowed_actions=exc.allowed)
    if isinstance(exc, Conflict):
        return problem_response(request, 409, "Conflict", str(exc))
    if isinstance(exc, InvalidRequest):
        return problem_response(request, 422, "Unprocessable Content", str(exc))
    raise exc


async def audit_refusal(database: Database, exc: Forbidden) -> None:
    """A refused access to patient data is recorded too, after its transaction rolled back."""
    if isinstance(exc.audit_event, audit.AuditEvent):
        await database.write(audit.append, exc.audit_event)


@web.middleware
async def problem_middleware(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        return problem_response(request, exc.status, exc.reason, detail,
                                headers={k: v for k, v in exc.headers.items()
                                         if k.lower() in ("allow", "www-authenticate")})
    except Forbidden as exc:
        await audit_refusal(request.app[DATABASE], exc)
        return _from_exception(request, exc)
    except (ProblemError, TokenError, NotFound, TransitionError, Conflict, InvalidRequest) as exc:
        return _from_exception(request, exc)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(request, 500, "Internal Server Error",
                                "the server failed; the error was logged")
