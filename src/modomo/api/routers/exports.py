"""Exports: ``POST /exports`` (an ``export`` job on the ``celery`` queue), ``GET /exports/{id}``
(the job with its manifest summary) and ``GET /exports/{id}/download`` (the zip archive)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import StreamingResponse

from modomo.api.auth import CurrentUser
from modomo.api.enqueue import enqueue_job
from modomo.api.jobrequest import JobRequest
from modomo.api.keys import Principal
from modomo.api.ownership import check_job
from modomo.api.ratelimit import enqueue_limit
from modomo.api.schemas import Accepted, ExportRequest
from modomo.jobs import JobNotFound, describe_job

router = APIRouter(prefix="/exports", tags=["exports"])

CHUNK = 1 << 20
EXPORT = JobRequest(ExportRequest)


@router.post("", status_code=status.HTTP_202_ACCEPTED, openapi_extra=EXPORT.openapi_extra())
def create_export(
    principal: Annotated[Principal, Depends(enqueue_limit)],
    body: Annotated[ExportRequest, Depends(EXPORT.dependency)],
) -> Accepted:
    """Export the chosen scenes (failed scenes and non-canonical near-duplicates left out
    unless asked for) with deterministic train/val/test splits stratified by room type.
    ``job_id`` must be one of the caller's jobs (an admin's: any job), else 404."""
    if body.job_id is not None:
        check_job(body.job_id, principal)
    options = body.task_kwargs()
    return enqueue_job(
        principal,
        "export",
        "modomo.tasks.export_tasks.run_export_job",
        {"options": options},
        params=options,
        options=body,
        missing="this worker image has no export task (modomo.tasks.export_tasks)",
    )


def _export(export_id: uuid.UUID, principal: Principal) -> dict[str, Any]:
    check_job(export_id, principal, "export")
    try:
        job = describe_job(export_id, max_failures=0)
    except JobNotFound:
        job = None
    if job is None or job["type"] != "export":
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no export {export_id}")
    return job


@router.get("/{export_id}")
def get_export(export_id: uuid.UUID, principal: CurrentUser) -> dict[str, Any]:
    """The export job: status, options, and once completed its counts, model versions,
    checksum and ``download_url``."""
    job = _export(export_id, principal)
    result = job.get("result") or {}
    job["download_url"] = (
        f"/exports/{export_id}/download" if job["status"] == "completed" and result else None
    )
    return job


@router.get("/{export_id}/download", response_class=StreamingResponse)
def download_export(export_id: uuid.UUID, principal: CurrentUser) -> StreamingResponse:
    """The export as a zip archive (streamed). 409 until the export has completed."""
    from modomo.artifacts import artifact_store

    job = _export(export_id, principal)
    result = job.get("result") or {}
    if job["status"] != "completed" or not result.get("archive"):
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"export {export_id} is {job['status']}, not ready"
        )
    try:
        handle = artifact_store().open(result["archive"])
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(CHUNK):
                yield block

    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="modomo-export-{export_id}.zip"',
            "Content-Length": str(result.get("bytes", "")),
        },
    )
