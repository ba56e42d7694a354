"""Job lifecycle and accounting: create, fan out, count progress, cancel."""

from modomo.jobs.accounting import JobCounts
from modomo.jobs.lifecycle import (
    JobNotFound,
    cancel_job,
    create_job,
    describe_job,
    dispatch_batches,
    finish_if_done,
    job_record,
    list_jobs,
)
from modomo.jobs.reporter import ProgressReporter

__all__ = [
    "JobCounts",
    "JobNotFound",
    "ProgressReporter",
    "cancel_job",
    "create_job",
    "describe_job",
    "dispatch_batches",
    "finish_if_done",
    "job_record",
    "list_jobs",
]
