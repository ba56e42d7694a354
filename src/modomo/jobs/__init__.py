"""Job lifecycle and accounting: create, fan out, count progress, cancel."""

from modomo.jobs.accounting import JobCounts
from modomo.jobs.lifecycle import (
    JobConflict,
    JobNotFound,
    abandon_job,
    cancel_job,
    close_source,
    count_jobs,
    create_job,
    describe_job,
    dispatch_batches,
    fail_lost_work,
    failed_scenes,
    finish_if_done,
    job_is_active,
    job_record,
    list_jobs,
    open_source,
    pending_scenes,
    set_result,
    update_params,
)
from modomo.jobs.reporter import ProgressReporter

__all__ = [
    "JobConflict",
    "JobCounts",
    "JobNotFound",
    "ProgressReporter",
    "abandon_job",
    "cancel_job",
    "close_source",
    "count_jobs",
    "create_job",
    "describe_job",
    "dispatch_batches",
    "fail_lost_work",
    "failed_scenes",
    "finish_if_done",
    "job_is_active",
    "job_record",
    "list_jobs",
    "open_source",
    "pending_scenes",
    "set_result",
    "update_params",
]
