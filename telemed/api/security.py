"""Who is calling: the bearer token checked, the actor loaded as stored now."""

from __future__ import annotations

from aiohttp import web

from telemed.api.context import DATABASE, TOKENS
from telemed.auth import Claims, TokenError
from telemed.caller import Caller
from telemed.permissions import Forbidden
from telemed.store import accounts


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def bearer_claims(request: web.Request, scope: str) -> Claims:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("send an access token as 'Authorization: Bearer <token>'")
    return request.app[TOKENS].decode(token.strip(), scope)  # type: ignore[arg-type]


async def authenticated(request: web.Request) -> Caller:
    """The calling staff member; suspended institutions and disabled accounts stop here."""
    return await caller_for(request, bearer_claims(request, "api"))


async def caller_for_token(request: web.Request, token: str) -> Caller:
    """For WebSockets from browsers, which cannot send headers: the token comes in a message."""
    return await caller_for(request, request.app[TOKENS].decode(token, "api"))


async def caller_for(request: web.Request, claims: Claims) -> Caller:
    actor = await request.app[DATABASE].read(accounts.load_actor, claims.subject)
    if actor is None:
        raise TokenError("the token's account no longer exists")
    if not actor.active:
        raise Forbidden("your account is disabled")
    if actor.institution_status != "approved":
        raise Forbidden("your institution is suspended")
    return Caller(actor, client_address(request))
