"""Thin Celery tasks, one module per domain; each module's tasks go to that domain's queue."""
