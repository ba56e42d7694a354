"""Whose jobs a caller may see: a job belongs to its creator.

A ``user`` sees and acts on (reads, lists, follows, cancels, retries, downloads the export
of, filters scenes and objects by) the jobs it created: those whose ``created_by`` is its
principal (:attr:`modomo.api.keys.Principal.owner`), as Supabase's row-level security shows
signed-in users their own jobs only. An ``admin`` sees every job, the CLI's and the
schedules' included. Another user's job answers 404, worded as for a job that does not
exist, so job ids do not leak.
"""

from __future__ import annotations

import uuid

from fastapi import HTTPException, status

from modomo.api.keys import Principal
from modomo.jobs import JobNotFound, job_owner

__all__ = ["check_job", "job_visible", "owner_filter"]


def owner_filter(principal: Principal) -> tuple[str, ...] | None:
    """The ``created_by`` values of the jobs ``principal`` may see; None for every job (an
    admin)."""
    return None if principal.is_admin else principal.owners


def job_visible(job_id: uuid.UUID, principal: Principal) -> bool:
    """True when the job exists and ``principal`` may see it."""
    try:
        owner = job_owner(job_id)
    except JobNotFound:
        return False
    owners = owner_filter(principal)
    return owners is None or (owner is not None and owner in owners)


def check_job(job_id: uuid.UUID, principal: Principal, what: str = "job") -> None:
    """Raise 404 (``no {what} {id}``) unless the job exists and ``principal`` may see it.

    Raises:
        HTTPException: 404, the same for a missing job and another user's.
    """
    if not job_visible(job_id, principal):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {what} {job_id}")
