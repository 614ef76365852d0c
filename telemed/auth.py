"""Credentials: scrypt password hashes, signed JWT access tokens with grants, join codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import jwt

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
ALGORITHM = "HS256"
ISSUER = "telemed"

Scope = Literal["api", "room"]


class TokenError(Exception):
    """The token is missing, malformed, forged, expired or of the wrong scope."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
"""Checked against when a username is unknown, so timing does not reveal which names exist."""


@dataclass(frozen=True)
class Grants:
    """What a token may do beyond its role, in the LiveKit style."""

    rooms: tuple[str, ...] = ()
    can_publish: bool = False
    can_subscribe: bool = False
    patients: tuple[str, ...] = ()
    room_admin: bool = False
    room_kind: str = "consult"

    def as_claim(self) -> dict:
        return {"rooms": list(self.rooms), "canPublish": self.can_publish,
                "canSubscribe": self.can_subscribe, "patients": list(self.patients),
                "roomAdmin": self.room_admin, "roomKind": self.room_kind}

    @classmethod
    def from_claim(cls, claim: dict) -> "Grants":
        if not isinstance(claim, dict):
            raise TokenError("grants claim is not an object")
        return cls(rooms=tuple(map(str, claim.get("rooms", ()))),
                   can_publish=bool(claim.get("canPublish", False)),
                   can_subscribe=bool(claim.get("canSubscribe", False)),
                   patients=tuple(map(str, claim.get("patients", ()))),
                   room_admin=bool(claim.get("roomAdmin", False)),
                   room_kind=str(claim.get("roomKind", "consult")))


@dataclass(frozen=True)
class Claims:
    subject: str
    scope: Scope
    role: str
    name: str
    institution_id: str | None
    grants: Grants = field(default_factory=Grants)
    expires_at: int = 0
    token_id: str = ""


class TokenService:
    """Issues and checks access tokens signed with the server's secret."""

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        if len(secret) < 32:
            raise ValueError("token secret must be at least 32 characters")
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def issue(self, claims: Claims, ttl_seconds: int | None = None) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER, "sub": claims.subject, "scope": claims.scope, "role": claims.role,
            "name": claims.name, "inst": claims.institution_id, "grants": claims.grants.as_claim(),
            "iat": now, "exp": now + (self.ttl_seconds if ttl_seconds is None else ttl_seconds),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str, scope: Scope) -> Claims:
        try:
            payload = jwt.decode(token, self._secret, algorithms=[ALGORITHM], issuer=ISSUER,
                                 options={"require": ["exp", "iat", "sub", "scope", "jti"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"token is invalid: {exc}") from None
        if payload["scope"] != scope:
            raise TokenError(f"token is for {payload['scope']!r}, not {scope!r}")
        return Claims(subject=str(payload["sub"]), scope=payload["scope"],
                      role=str(payload.get("role", "")), name=str(payload.get("name", "")),
                      institution_id=payload.get("inst"),
                      grants=Grants.from_claim(payload.get("grants", {})),
                      expires_at=int(payload["exp"]), token_id=str(payload["jti"]))


def new_join_code() -> str:
    """An unguessable single-use code (256 bits) for a guest or patient join link."""
    return secrets.token_urlsafe(32)


def join_code_hash(code: str) -> str:
    """Only the hash is stored, so a database leak does not leak usable links."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()
