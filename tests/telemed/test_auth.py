"""Passwords and tokens: what is stored, what verifies, and what is refused."""

from __future__ import annotations

import time

import jwt
import pytest

from telemed.auth import (Claims, Grants, TokenError, TokenService, hash_password, join_code_hash,
                          new_join_code, verify_password)

SECRET = "k" * 48


def test_password_hash_is_scrypt_salted_and_verifies():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$") and "correct horse" not in first
    assert first != second
    assert verify_password("correct horse", first)
    assert not verify_password("correct hors", first)
    assert not verify_password("x", "not-a-hash")
    assert not verify_password("x", "bcrypt$1$2$3$4$5")


def claims(**overrides) -> Claims:
    base = dict(subject="u1", scope="api", role="expert", name="dr", institution_id="i1",
                grants=Grants(rooms=("c1",), can_publish=True, can_subscribe=True, patients=("p1",)))
    base.update(overrides)
    return Claims(**base)


def test_token_round_trip_keeps_grants():
    service = TokenService(SECRET, 60)
    decoded = service.decode(service.issue(claims()), "api")
    assert decoded.subject == "u1" and decoded.institution_id == "i1"
    assert decoded.grants == Grants(("c1",), True, True, ("p1",))
    assert decoded.expires_at - time.time() == pytest.approx(60, abs=5)
    assert decoded.token_id


def test_expired_token_is_refused():
    service = TokenService(SECRET, 60)
    with pytest.raises(TokenError, match="expired"):
        service.decode(service.issue(claims(), ttl_seconds=-10), "api")


def test_forged_tampered_and_unsigned_tokens_are_refused():
    service = TokenService(SECRET, 60)
    forged = TokenService("x" * 48, 60).issue(claims())
    with pytest.raises(TokenError, match="invalid"):
        service.decode(forged, "api")
    header, payload, signature = service.issue(claims()).split(".")
    tampered_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"expert"', b'"admin"')).decode()
    with pytest.raises(TokenError):
        service.decode(f"{header}.{tampered_payload}.{signature}", "api")
    unsigned = jwt.encode({"sub": "u1", "scope": "api", "iss": "telemed", "exp": time.time() + 60,
                           "iat": time.time(), "jti": "x"}, None, algorithm="none")
    with pytest.raises(TokenError):
        service.decode(unsigned, "api")
    with pytest.raises(TokenError):
        service.decode("garbage", "api")


def test_room_token_is_not_an_api_token():
    service = TokenService(SECRET, 60)
    with pytest.raises(TokenError, match="not 'api'"):
        service.decode(service.issue(claims(scope="room")), "api")


def test_short_secret_is_rejected():
    with pytest.raises(ValueError):
        TokenService("short", 60)


def test_join_codes_are_unguessable_and_stored_hashed():
    codes = {new_join_code() for _ in range(200)}
    assert len(codes) == 200
    code = codes.pop()
    assert len(code) >= 43
    assert join_code_hash(code) != code and len(join_code_hash(code)) == 64
