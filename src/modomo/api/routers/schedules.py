"""Recurring schedules (admin): list, create, enable/disable, delete. Same as
``modomo schedules``; the scheduler tick (``modomo beat``) fires them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict

from modomo.api.auth import AdminUser
from modomo.api.schemas import PLAIN_TEXT, ScheduleRequest
from modomo.jobs.schedules import (
    ScheduleError,
    ScheduleNotFound,
    add_schedule,
    get_schedule,
    list_schedules,
    remove_schedule,
    set_enabled,
)

router = APIRouter(prefix="/schedules", tags=["schedules"])

Key = Annotated[str, Path(min_length=1, max_length=128, pattern=PLAIN_TEXT)]


class EnabledRequest(BaseModel):
    """Turn a schedule on or off."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


def _unprocessable(exc: ScheduleError) -> HTTPException:
    field, _, message = str(exc).partition(": ")
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": ["body", field], "msg": message or str(exc), "type": "value_error"}],
    )


@router.get("")
def get_schedules(_: AdminUser) -> list[dict[str, Any]]:
    """Every schedule with its last and next run (UTC)."""
    return list_schedules()


@router.post("", status_code=status.HTTP_201_CREATED)
def post_schedule(body: ScheduleRequest, principal: AdminUser) -> dict[str, Any]:
    """Create a recurring job: ``cron`` (five fields) read in ``timezone``; each due time
    creates one ``job_type`` job with ``params`` (validated like that job's own request)."""
    try:
        return add_schedule(
            body.name,
            body.cron,
            body.job_type,
            body.task_kwargs(),
            timezone=body.timezone,
            priority=body.priority,
            enabled=body.enabled,
            created_by=principal.owner,
        )
    except ScheduleError as exc:
        raise _unprocessable(exc) from None


@router.get("/{key}")
def get_one(key: Key, _: AdminUser) -> dict[str, Any]:
    """One schedule, by id or name."""
    try:
        return get_schedule(key)
    except ScheduleNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.patch("/{key}")
def patch_schedule(key: Key, body: EnabledRequest, _: AdminUser) -> dict[str, Any]:
    """Enable or disable a schedule (enabling computes its next run from now)."""
    try:
        return set_enabled(key, body.enabled)
    except ScheduleNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.delete("/{key}")
def delete_schedule(key: Key, _: AdminUser) -> dict[str, str]:
    """Delete a schedule; the jobs it created stay."""
    try:
        remove_schedule(key)
    except ScheduleNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    return {"deleted": key}
