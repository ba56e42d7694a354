"""Request and response bodies of the API (pydantic). Unknown fields are refused (422 naming
the field), and every limit and list is bounded."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from modomo.config import get_settings
from modomo.images.fetch import check_url_allowed
from modomo.inference import STAGES
from modomo.jobs.scheduling import MAX_DELAY, Timing
from modomo.sources.houzz import ROOM_TYPES

__all__ = [
    "SCHEDULE_PARAMS",
    "Accepted",
    "ColorsRequest",
    "DetectPendingRequest",
    "DetectRequest",
    "ExportRequest",
    "HuggingFaceImportRequest",
    "JobOptions",
    "Page",
    "ReclassifyRequest",
    "RetryRequest",
    "ScheduleRequest",
    "ScraperRequest",
]

MAX_LIMIT = 1_000_000
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
"""No control characters (PostgreSQL refuses NUL in text; none belongs in a name)."""
URL_CHECK_S = 5.0
"""Seconds a request's URL check may spend resolving the host."""
MAX_SCENE_IDS = 1_000

Stage = Literal["detect", "segment", "depth", "colors"]
assert set(Stage.__args__) == set(STAGES)  # type: ignore[attr-defined]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Accepted(BaseModel):
    """A job was created and its start task sent, or it was scheduled (HTTP 202)."""

    job_id: uuid.UUID
    task_id: str
    status: str = Field(
        description="The job's status: pending until a worker starts it, scheduled until its "
        "run_at."
    )
    status_url: str = Field(description="Where to follow the job: GET it.")


_MAX_DELAY_S = MAX_DELAY.total_seconds()


PriorityName = Literal["urgent", "high", "normal", "low"]
"""A job priority (:class:`modomo.db.models.Priority`)."""


class JobOptions(_Request):
    """How urgent a job is and when it may run; every job-creating request takes these.

    ``priority`` maps to a Celery message priority (urgent 0, high 3, normal 6, low 9; a
    worker takes the most urgent waiting batch first). ``run_at`` (timezone-aware) or
    ``countdown`` (seconds) schedules the job; ``expires_at`` or ``expires`` (seconds after
    the run time, or from now for a job that runs now) expires it if it has not started by
    then.
    """

    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"priority", "run_at", "countdown", "expires_at", "expires"}
    )

    priority: PriorityName = "normal"
    run_at: AwareDatetime | None = Field(
        default=None, description="When to start (UTC or with offset)."
    )
    countdown: Annotated[float, Field(ge=0, le=_MAX_DELAY_S)] | None = Field(
        default=None, description="Seconds from now to start."
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="Expire the job if it has not started by then."
    )
    expires: Annotated[float, Field(gt=0, le=_MAX_DELAY_S)] | None = Field(
        default=None,
        description="Seconds after the job's run time (run_at or countdown; else now) "
        "after which a job not started expires.",
    )

    @model_validator(mode="after")
    def _consistent_times(self) -> JobOptions:
        self.timing()  # raises ValueError naming the fields
        return self

    def timing(self) -> Timing:
        """The resolved priority, run time and expiry (times from now)."""
        return Timing.resolve(
            self.priority, self.run_at, self.countdown, self.expires_at, self.expires
        )

    def task_kwargs(self) -> dict[str, Any]:
        """The start task's keyword arguments: the request's fields without the job options."""
        return self.model_dump(mode="json", exclude=set(self.OPTIONS))


class DetectRequest(JobOptions):
    """Run the detection pipeline on one image URL or on stored scenes (exactly one)."""

    image_url: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="An http(s) image on a public address."
    )
    scene_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_SCENE_IDS)] | None = (
        None
    )
    stages: Annotated[list[Stage], Field(min_length=1, max_length=4)] | None = Field(
        default=None, description="Pipeline stages (default: all: detect, segment, depth, colors)."
    )

    @field_validator("image_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None:
            # Same rules as ingest: http(s) only, no private/loopback/link-local addresses.
            check_url_allowed(
                value, allow_private=get_settings().allow_private_urls, timeout_s=URL_CHECK_S
            )
        return value

    @model_validator(mode="after")
    def _one_input(self) -> DetectRequest:
        if (self.image_url is None) == (self.scene_ids is None):
            raise ValueError("give exactly one of image_url or scene_ids")
        return self


class ScraperRequest(JobOptions):
    """Crawl Houzz room galleries."""

    room_types: Annotated[list[Literal[ROOM_TYPES]], Field(min_length=1, max_length=8)] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(ROOM_TYPES)
    )
    limit: Annotated[int, Field(ge=1, le=100_000)] = 100


class HuggingFaceImportRequest(JobOptions):
    """Import images from a Hugging Face dataset."""

    dataset: Annotated[str, Field(min_length=1, max_length=200, pattern=PLAIN_TEXT)] = Field(
        description="Hub id, 'owner/name' (or an absolute path under one of the server's "
        "MODOMO_IMPORT_ROOTS, none by default). datasets builder names (parquet, csv, json, "
        "imagefolder …) are refused."
    )
    split: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w.\-\[\]:%]+$")] = "train"
    offset: Annotated[int, Field(ge=0, le=100_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 100
    include_detection: bool = False

    @field_validator("dataset")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        from modomo.sources.huggingface import DatasetError, check_dataset

        try:
            check_dataset(value, get_settings().import_roots)
        except DatasetError as exc:
            raise ValueError(str(exc)) from None
        return value


class ColorsRequest(JobOptions):
    """Compute palettes of the scenes that have none."""

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] | None = Field(
        default=None, description="At most this many scenes, oldest first (default: all)."
    )


class ReclassifyRequest(JobOptions):
    """Classify scenes (room type, style, scene type) with CLIP."""

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] | None = None
    force_reclassify: bool = False


_Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]


class ExportRequest(JobOptions):
    """Export scenes as a dataset (COCO, YOLO or Hugging Face) or as Label Studio tasks,
    zipped for download."""

    format: Literal["coco", "yolo", "hf", "label-studio"]
    job_id: uuid.UUID | None = Field(default=None, description="Only this job's scenes.")
    room_types: Annotated[list[_Label], Field(max_length=32)] = []
    styles: Annotated[list[_Label], Field(max_length=32)] = []
    sources: Annotated[list[_Label], Field(max_length=8)] = []
    scene_types: Annotated[
        list[Literal["scene", "object", "hybrid", "unknown"]], Field(max_length=4)
    ] = []
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.0
    include_failed: bool = False
    include_duplicates: bool = False
    ratios: Annotated[
        list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=3, max_length=3)
    ] = [
        0.8,
        0.1,
        0.1,
    ]
    yolo_task: Literal["detect", "segment"] = "detect"
    name: Annotated[str, Field(min_length=1, max_length=96, pattern=r"^[\w.-]+$")] = (
        "modomo-interiors"
    )
    classes: Literal["used", "taxonomy"] | Annotated[list[_Label], Field(min_length=1)] = Field(
        default="used",
        description="Class ids: used (the categories that occur, compact ids), taxonomy "
        "(every category), or the categories to keep, in id order.",
    )

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            from modomo.export.classes import ClassMap

            ClassMap(tuple(value))  # raises ValueError naming unknown or repeated categories
        return value

    @field_validator("ratios")
    @classmethod
    def _sum_to_one(cls, value: list[float]) -> list[float]:
        if abs(sum(value) - 1) > 1e-6:
            raise ValueError("train, val and test ratios must sum to 1")
        return value


class RetryRequest(_Request):
    """Options of a retry: its priority (default: the original job's)."""

    priority: PriorityName | None = None


class DetectPendingRequest(JobOptions):
    """Run the detection pipeline on the scenes that have no objects yet (schedules)."""

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] | None = None
    stages: Annotated[list[Stage], Field(min_length=1, max_length=4)] | None = None


class _ExportParams(ExportRequest):
    def task_kwargs(self) -> dict[str, Any]:
        return {"options": super().task_kwargs()}


SCHEDULE_PARAMS: dict[str, type[JobOptions]] = {
    "scrape": ScraperRequest,
    "import": HuggingFaceImportRequest,
    "colors": ColorsRequest,
    "detection": DetectPendingRequest,
    "classify": ReclassifyRequest,
    "dedup": JobOptions,
    "export": _ExportParams,
}
"""Per schedulable job type, the request model its ``params`` must satisfy."""


class ScheduleRequest(_Request):
    """A recurring job: a cron expression read in a time zone, a job type and its params."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w .:-]+$")]
    cron: Annotated[str, Field(min_length=9, max_length=128, pattern=PLAIN_TEXT)] = Field(
        description="Five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *'."
    )
    timezone: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w/+-]+$")] = "UTC"
    job_type: Literal["scrape", "import", "colors", "detection", "classify", "dedup", "export"]
    params: dict[str, Any] = Field(
        default_factory=dict, description="The job's request fields (as POSTed for that job)."
    )
    priority: PriorityName = "normal"
    enabled: bool = True

    @model_validator(mode="after")
    def _valid_params(self) -> ScheduleRequest:
        self.task_kwargs()
        return self

    def task_kwargs(self) -> dict[str, Any]:
        """The start task's keyword arguments from ``params``, validated like the job's own
        request.

        Raises:
            ValueError: a field of ``params`` is invalid or is a job option (give the priority
                as the schedule's own field; a schedule decides when its jobs run).
        """
        timing = sorted(JobOptions.OPTIONS & set(self.params))
        if timing:
            raise ValueError(f"params: {', '.join(timing)} cannot be set per run of a schedule")
        try:
            return SCHEDULE_PARAMS[self.job_type].model_validate(self.params).task_kwargs()
        except ValidationError as exc:
            where = "; ".join(
                f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(where) from None


class Page(BaseModel):
    """One page of a list: ``items``, the ``total`` matching, and the window asked for."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
