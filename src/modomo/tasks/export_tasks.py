"""Export jobs (queue ``celery``): write a dataset with :func:`modomo.export.run_export` into a
temporary folder, zip it, and store the archive in the artifact store
(``exports/<job id>.zip``) for ``GET /exports/{id}/download``.

Thin: the export itself streams (flat memory); the job records the manifest as its
``result``, with the archive's key and size.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

from celery import Task

from modomo.artifacts import artifact_store
from modomo.celery_app import app
from modomo.export import ExportOptions, run_export
from modomo.jobs import close_source, job_is_active, open_source, set_result, update_params
from modomo.tasks.base import RETRY, SourceTask

__all__ = ["archive_key", "run_export_job"]

log = logging.getLogger(__name__)


def archive_key(job_id: uuid.UUID | str) -> str:
    """The artifact key of an export job's zip archive."""
    return f"exports/{job_id}.zip"


def _zip(folder: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            # images are already compressed: store them as they are
            stored = path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".parquet"}
            zf.write(
                path,
                path.relative_to(folder).as_posix(),
                compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED,
            )


@app.task(bind=True, base=SourceTask, **RETRY)
def run_export_job(self: Task, job_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """Export the scenes ``options`` choose and store the archive.

    Args:
        job_id: a pending ``export`` job created by the caller.
        options: :class:`modomo.export.ExportOptions` fields as JSON (``job_id`` as a string).

    Returns:
        ``{"archive", "bytes", "checksum", "total"}`` (``{"skipped": ...}`` for a job no
        longer active).
    """
    if not job_is_active(job_id):
        return {"skipped": "the job is no longer active"}
    values = dict(options)
    if values.get("job_id"):
        values["job_id"] = uuid.UUID(str(values["job_id"]))
    if isinstance(values.get("classes"), list):
        values["classes"] = tuple(values["classes"])
    for name in ("room_types", "styles", "sources", "scene_types", "ratios"):
        if name in values and values[name] is not None:
            values[name] = tuple(values[name])
    export_options = ExportOptions(**values)
    open_source(job_id)
    with tempfile.TemporaryDirectory(prefix="modomo-export-") as temporary:
        folder = Path(temporary) / "dataset"

        def progress(scenes: int) -> None:
            if scenes % 500 == 0:
                update_params(job_id, exported_scenes=scenes)

        manifest = run_export(export_options, folder, progress)
        archive = Path(temporary) / "export.zip"
        _zip(folder, archive)
        key = artifact_store().put_file(archive_key(job_id), archive)
        size = archive.stat().st_size
    summary = {
        "archive": key,
        "bytes": size,
        "checksum": manifest["checksum"],
        "total": manifest["total"],
        "counts": manifest["counts"],
        "models": manifest["models"],
    }
    set_result(job_id, summary)
    close_source(
        job_id,
        message=f"exported {manifest['total']['scenes']} scenes, "
        f"{manifest['total']['objects']} objects ({export_options.format})",
    )
    return summary
