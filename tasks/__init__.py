"""Compatibility: the original Modomo scraper's top-level ``tasks`` package, importable from
the repository root as its guide writes it::

    from tasks.color_tasks import run_color_processing_job
    run_color_processing_job.delay(job_id="color_001", limit=100)

Each ``tasks.<module>`` is the module :mod:`modomo.tasks.<module>` itself (the same module
object, so the same Celery tasks, registered under the same names), as ``celery_app.py``
re-exports :mod:`modomo.celery_app`.
"""
