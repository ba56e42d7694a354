"""API key management (admin): list, create, revoke. Same as ``modomo keys``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from modomo.api.auth import AdminUser
from modomo.api.keys import KeyAmbiguous, KeyNotFound, create_key, list_keys, revoke_key
from modomo.api.schemas import PLAIN_TEXT

router = APIRouter(prefix="/keys", tags=["keys"])


class KeyRequest(BaseModel):
    """A new key's name and role."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=PLAIN_TEXT)]
    role: Literal["user", "admin"] = "user"


@router.get("")
def get_keys(_: AdminUser, include_revoked: bool = False) -> list[dict[str, Any]]:
    """Every key's record (never the key itself)."""
    return list_keys(include_revoked=include_revoked)


@router.post("", status_code=status.HTTP_201_CREATED)
def post_key(body: KeyRequest, _: AdminUser) -> dict[str, Any]:
    """Create a key; the answer's ``key`` is shown this once and never stored."""
    record, key = create_key(body.name, body.role)
    return {**record, "key": key}


@router.delete("/{id_or_prefix}")
def delete_key(
    id_or_prefix: Annotated[str, Path(max_length=64, pattern=PLAIN_TEXT)], _: AdminUser
) -> dict[str, Any]:
    """Revoke a key by id or prefix (matched literally: ``%`` and ``_`` are no wildcards); it
    stops working at once. 404 when no active key matches, 409 when a prefix matches
    several (none is revoked)."""
    try:
        return revoke_key(id_or_prefix)
    except KeyAmbiguous as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    except KeyNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
