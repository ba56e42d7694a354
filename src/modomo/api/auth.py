"""Who may call the API: API keys and Supabase-issued JWTs, with roles ``user`` and ``admin``.

Credentials come as ``Authorization: Bearer <key or JWT>`` or ``X-API-Key: <key>``. A value
with three dot-separated parts is a JWT and is verified with PyJWT: against the project's
HS256 secret (``MODOMO_JWT_SECRET`` / ``SUPABASE_JWT_SECRET``) or the signing keys at
``MODOMO_JWT_JWKS_URL`` (Supabase's asymmetric keys), with ``exp`` and the audience checked.
The admin role comes from a configured claim (``MODOMO_JWT_ADMIN_CLAIM``, a dotted path,
default ``app_metadata.role``, equal to ``MODOMO_JWT_ADMIN_VALUE``). Anything else is an API
key, looked up by digest (:mod:`modomo.api.keys`).

With ``MODOMO_AUTH_DISABLED=1`` (local use) nobody is asked for credentials, and only
loopback clients are served, whatever address the server was bound to.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status

from modomo.api.keys import Principal, lookup_key
from modomo.config import Settings, get_settings

__all__ = ["AdminUser", "CurrentUser", "authenticate", "require_admin", "require_user"]

log = logging.getLogger(__name__)

_ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    return key or None


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@functools.cache
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=600, timeout=5)


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def verify_jwt(token: str, settings: Settings) -> Principal:
    """Verify a JWT's signature, expiry and audience; returns its principal.

    Raises:
        HTTPException: 401 when JWTs are not configured or the token does not verify.
    """
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    if not secret and not settings.jwt_jwks_url:
        raise _unauthorized("JWTs are not accepted: no MODOMO_JWT_SECRET or MODOMO_JWT_JWKS_URL")
    options: Any = {"require": ["exp", "sub"], "verify_aud": bool(settings.jwt_audience)}
    audience = settings.jwt_audience or None
    try:
        algorithm = jwt.get_unverified_header(token).get("alg", "")
        if algorithm.startswith("HS"):
            if not secret:
                raise jwt.InvalidTokenError("HS-signed tokens need MODOMO_JWT_SECRET")
            claims = jwt.decode(
                token, secret, algorithms=["HS256"], audience=audience, options=options
            )
        else:
            if not settings.jwt_jwks_url:
                raise jwt.InvalidTokenError("asymmetric tokens need MODOMO_JWT_JWKS_URL")
            signing_key = _jwks_client(settings.jwt_jwks_url).get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token, signing_key, algorithms=_ASYMMETRIC, audience=audience, options=options
            )
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    granted = _claim(claims, settings.jwt_admin_claim)
    admin = granted == settings.jwt_admin_value or (
        isinstance(granted, list) and settings.jwt_admin_value in granted
    )
    return Principal(subject=f"jwt:{claims['sub']}", role="admin" if admin else "user", kind="jwt")


def authenticate(request: Request) -> Principal:
    """The caller's principal, from its credential (FastAPI dependency).

    Raises:
        HTTPException: 401 with no, an unknown, a revoked or an invalid credential; 403 for a
            non-loopback client while auth is disabled.
    """
    settings = get_settings()
    if settings.auth_disabled:
        client = request.client.host if request.client else None
        if not _is_loopback(client):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail="auth is disabled (MODOMO_AUTH_DISABLED): only loopback clients served",
            )
        return Principal(subject="local", role="admin", kind="local")
    credential = _credential(request)
    if credential is None:
        raise _unauthorized("credentials required: Authorization: Bearer <key> or X-API-Key")
    if credential.count(".") == 2:
        return verify_jwt(credential, settings)
    principal = lookup_key(credential)
    if principal is None:
        raise _unauthorized("unknown or revoked API key")
    return principal


def require_user(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Any authenticated caller (role ``user`` or ``admin``)."""
    return principal


def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """An ``admin`` caller.

    Raises:
        HTTPException: 403 for a ``user``.
    """
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this action needs the admin role")
    return principal


CurrentUser = Annotated[Principal, Depends(require_user)]
AdminUser = Annotated[Principal, Depends(require_admin)]
