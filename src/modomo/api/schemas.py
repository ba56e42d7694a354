"""Request and response bodies of the API (pydantic). Unknown fields are refused (422 naming
the field), and every limit and list is bounded."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modomo.config import get_settings
from modomo.images.fetch import check_url_allowed
from modomo.inference import STAGES
from modomo.sources.houzz import ROOM_TYPES

__all__ = [
    "Accepted",
    "ColorsRequest",
    "DetectRequest",
    "ExportRequest",
    "HuggingFaceImportRequest",
    "Page",
    "ReclassifyRequest",
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
    """A job was created and its start task sent (HTTP 202)."""

    job_id: uuid.UUID
    task_id: str
    status: str = Field(description="The job's status: pending until a worker starts it.")
    status_url: str = Field(description="Where to follow the job: GET it.")


class DetectRequest(_Request):
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


class ScraperRequest(_Request):
    """Crawl Houzz room galleries."""

    room_types: Annotated[list[Literal[ROOM_TYPES]], Field(min_length=1, max_length=8)] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(ROOM_TYPES)
    )
    limit: Annotated[int, Field(ge=1, le=100_000)] = 100


_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


class HuggingFaceImportRequest(_Request):
    """Import images from a Hugging Face dataset."""

    dataset: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Hub id, e.g. 'owner/name'."
    )
    split: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w.\-\[\]:%]+$")] = "train"
    offset: Annotated[int, Field(ge=0, le=100_000_000)] = 0
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 100
    include_detection: bool = False

    @field_validator("dataset")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        if not _DATASET.match(value):
            raise ValueError("not a Hugging Face dataset id (expected 'owner/name')")
        return value


class ColorsRequest(_Request):
    """Compute palettes of the scenes that have none."""

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] | None = Field(
        default=None, description="At most this many scenes, oldest first (default: all)."
    )


class ReclassifyRequest(_Request):
    """Classify scenes (room type, style, scene type) with CLIP."""

    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] | None = None
    force_reclassify: bool = False


_Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]


class ExportRequest(_Request):
    """Export scenes as a dataset (COCO, YOLO or Hugging Face), zipped for download."""

    format: Literal["coco", "yolo", "hf"]
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

    @field_validator("ratios")
    @classmethod
    def _sum_to_one(cls, value: list[float]) -> list[float]:
        if abs(sum(value) - 1) > 1e-6:
            raise ValueError("train, val and test ratios must sum to 1")
        return value


class Page(BaseModel):
    """One page of a list: ``items``, the ``total`` matching, and the window asked for."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
