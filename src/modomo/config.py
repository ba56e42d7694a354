"""Settings: the only place in Modomo that reads the environment.

Every variable has the ``MODOMO_`` prefix (``MODOMO_DATA_DIR``, ``MODOMO_BATCH_SIZE`` …). The
original Modomo scraper's names are accepted too: ``REDIS_URL``, ``CELERY_BROKER_URL``,
``CELERY_RESULT_BACKEND``, ``DATABASE_URL``, ``SUPABASE_URL`` and ``SUPABASE_SERVICE_ROLE_KEY``.

With nothing set, Modomo runs on its *embedded default*: a SQLite job database, Celery's
SQLAlchemy transport on a SQLite file, and a local artifact folder, all under the data dir.

A bad value fails at start-up with :class:`ConfigError`, which names the variable and says
what is wrong.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_ROOM_TYPES", "DEFAULT_STYLES", "ConfigError", "Settings", "get_settings"]

ENV_PREFIX = "MODOMO_"

DETECTOR_WEIGHTS = {
    "yolo": "yolo11n.pt",
    "grounding-dino": "IDEA-Research/grounding-dino-tiny",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "yoloe": "yoloe-11s-seg.pt",
}
"""Each detector backend's weights when ``MODOMO_DETECTOR_WEIGHTS`` is not set."""


def _env(name: str, *legacy: str) -> AliasChoices:
    """Accept ``MODOMO_NAME`` and, for the original scraper's variables, the legacy names."""
    return AliasChoices(ENV_PREFIX + name.upper(), *legacy)


class ConfigError(RuntimeError):
    """A setting has a bad value; the message names the environment variable."""


DEFAULT_ROOM_TYPES = (
    "living_room",
    "bedroom",
    "kitchen",
    "dining_room",
    "bathroom",
    "home_office",
    "kids_room",
    "hallway",
    "outdoor",
)
"""Room-type labels CLIP chooses from by default (``MODOMO_ROOM_TYPES``)."""

DEFAULT_STYLES = (
    "modern",
    "contemporary",
    "minimalist",
    "mid_century_modern",
    "scandinavian",
    "industrial",
    "bohemian",
    "farmhouse",
    "rustic",
    "coastal",
    "traditional",
    "transitional",
    "art_deco",
    "japandi",
    "eclectic",
)
"""Interior-style labels CLIP chooses from by default (``MODOMO_STYLES``)."""

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Modomo's settings, shared by the API, the workers and the CLI.

    Durations are in seconds, sizes in bytes or pixels as named.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("~/.local/share/modomo"),
        validation_alias=_env("data_dir"),
        description="Folder for the embedded SQLite databases and the local artifact store.",
    )
    redis_url: str = Field(
        default="",
        validation_alias=_env("redis_url", "REDIS_URL"),
        description="Redis URL; the broker and result backend default to it.",
    )
    broker_url: str = Field(
        default="",
        validation_alias=_env("broker_url", "CELERY_BROKER_URL"),
        description="Celery broker URL (default: REDIS_URL, else SQLite in the data dir).",
    )
    result_backend: str = Field(
        default="",
        validation_alias=_env("result_backend", "CELERY_RESULT_BACKEND"),
        description="Celery result backend (default: REDIS_URL, else SQLite in the data dir).",
    )
    database_url: str = Field(
        default="",
        validation_alias=_env("database_url", "DATABASE_URL"),
        description="Job and dataset database (PostgreSQL/Supabase; default SQLite).",
    )
    artifact_url: str = Field(
        default="",
        validation_alias=_env("artifact_url"),
        description="fsspec URL of the artifact store (default: DATA_DIR/artifacts).",
    )
    supabase_url: str = Field(default="", validation_alias=_env("supabase_url", "SUPABASE_URL"))
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("supabase_service_role_key", "SUPABASE_SERVICE_ROLE_KEY"),
    )
    supabase_anon_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("supabase_anon_key", "SUPABASE_ANON_KEY"),
        description="Read only to say that it does not configure the database (the original "
        "guide's setting): job records go where DATABASE_URL says.",
    )

    db_pool_size: PositiveInt = Field(
        default=10,
        validation_alias=_env("db_pool_size"),
        description="PostgreSQL connections kept open per process (the API serves requests "
        "on a thread pool, so bursts need more than a worker does).",
    )
    db_max_overflow: Annotated[int, Field(ge=0)] = Field(
        default=10,
        validation_alias=_env("db_max_overflow"),
        description="Extra PostgreSQL connections a process may open in a burst.",
    )

    # --- Celery reliability -------------------------------------------------------------
    task_soft_time_limit: PositiveInt = Field(
        default=600,
        validation_alias=_env("task_soft_time_limit"),
        description="Seconds before a task gets SoftTimeLimitExceeded.",
    )
    task_time_limit: PositiveInt = Field(
        default=900,
        validation_alias=_env("task_time_limit"),
        description="Seconds before a task's worker child is killed.",
    )
    visibility_timeout: PositiveInt | None = Field(
        default=None,
        validation_alias=_env("visibility_timeout"),
        description="Redis visibility timeout in seconds (default: 2 x the hard time limit).",
    )
    worker_max_tasks_per_child: PositiveInt = Field(
        default=200, validation_alias=_env("worker_max_tasks_per_child")
    )
    worker_max_memory_per_child_kb: PositiveInt = Field(
        default=2_000_000,
        validation_alias=_env("worker_max_memory_per_child_kb"),
        description="Resident memory (KiB) after which a worker child is replaced.",
    )
    result_expires: PositiveInt = Field(
        default=86_400,
        validation_alias=_env("result_expires"),
        description="Seconds Celery keeps task results.",
    )

    # --- maintenance (Celery beat; see modomo.maintenance) ------------------------------
    stale_job_timeout: PositiveInt = Field(
        default=3600,
        validation_alias=_env("stale_job_timeout"),
        description="Seconds without progress after which the reaper treats a running job as "
        "stalled (keep it above the task time limit).",
    )
    stale_job_max_reaps: Annotated[int, Field(ge=0, le=100)] = Field(
        default=3,
        validation_alias=_env("stale_job_max_reaps"),
        description="Times the reaper re-sends a stalled job's unfinished scenes before it "
        "fails them.",
    )
    reaper_interval: PositiveInt = Field(
        default=300,
        validation_alias=_env("reaper_interval"),
        description="Seconds between stale-job reaper runs.",
    )
    health_check_interval: PositiveInt = Field(
        default=300, validation_alias=_env("health_check_interval")
    )
    scheduler_tick: PositiveFloat = Field(
        default=5.0,
        validation_alias=_env("scheduler_tick"),
        description="Seconds between scheduler ticks (beat): scheduled jobs that are due are "
        "enqueued, expired ones marked, due recurring schedules fired.",
    )
    cleanup_hour: Annotated[int, Field(ge=0, le=23)] = Field(
        default=3,
        validation_alias=_env("cleanup_hour"),
        description="Hour (UTC) of the daily cleanup.",
    )
    artifact_grace: PositiveInt = Field(
        default=86400,
        validation_alias=_env("artifact_grace"),
        description="Seconds an artifact no scene refers to is kept before cleanup deletes it.",
    )
    export_retention: PositiveInt = Field(
        default=7 * 86400,
        validation_alias=_env("export_retention"),
        description="Seconds export archives are kept.",
    )

    # --- jobs ---------------------------------------------------------------------------
    batch_size: PositiveInt = Field(
        default=16,
        validation_alias=_env("batch_size"),
        description="Scenes per task when a job fans out.",
    )
    progress_interval: PositiveFloat = Field(
        default=0.5,
        validation_alias=_env("progress_interval"),
        description="Minimum seconds between progress writes of one job from one process.",
    )

    # --- images and fetching ------------------------------------------------------------
    max_image_pixels: PositiveInt = Field(
        default=50_000_000,
        validation_alias=_env("max_image_pixels"),
        description="Larger images are refused (decompression-bomb guard).",
    )
    max_download_bytes: PositiveInt = Field(
        default=25_000_000, validation_alias=_env("max_download_bytes")
    )
    fetch_timeout: PositiveFloat = Field(
        default=20.0,
        validation_alias=_env("fetch_timeout"),
        description="Seconds one image download may take, in all.",
    )
    allow_private_urls: bool = Field(
        default=False,
        validation_alias=_env("allow_private_urls"),
        description="Allow fetching from private, loopback and link-local addresses.",
    )
    user_agent: str = Field(
        default="Modomo/0.1 (+https://github.com/modomo; dataset builder)",
        validation_alias=_env("user_agent"),
    )

    # --- sources (see modomo.sources) -------------------------------------------------
    import_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("import_roots"),
        description="Comma-separated absolute folders whose datasets may be imported by path "
        "(`modomo import hf /path`, the API); none by default: hub ids (owner/name) only.",
    )
    houzz_base_url: str = Field(
        default="https://www.houzz.com",
        validation_alias=_env("houzz_base_url"),
        description="Base URL of the Houzz site profile (its gallery paths hang off it).",
    )
    crawl_rate_per_host: PositiveFloat = Field(
        default=1.0,
        validation_alias=_env("crawl_rate_per_host"),
        description="Requests per second to one host, at most, shared by every worker "
        "(crawl pages and images, URL-list downloads; a token bucket in Redis).",
    )
    crawl_burst: PositiveInt = Field(
        default=1,
        validation_alias=_env("crawl_burst"),
        description="Requests a rested host may get at once (the token bucket's size); over "
        "any w seconds a host gets at most burst + rate × w requests.",
    )
    crawl_max_wait: PositiveFloat = Field(
        default=300.0,
        validation_alias=_env("crawl_max_wait"),
        description="Seconds a request may wait for its host's turn (the shared rate limit, "
        "a Retry-After) before it fails instead.",
    )
    queue_rate_limits: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        validation_alias=_env("queue_rate_limits"),
        description="JSON object queue -> Celery rate limit of each of its tasks, per worker "
        '(e.g. {"scraping": "10/m"}; "N/s", "N/m" or "N/h").',
    )
    crawl_max_retries: Annotated[int, Field(ge=0, le=20)] = Field(
        default=5,
        validation_alias=_env("crawl_max_retries"),
        description="Retries of a page answered 429 or 5xx (Retry-After honoured).",
    )
    crawl_chunk_size: PositiveInt = Field(
        default=32,
        validation_alias=_env("crawl_chunk_size"),
        description="Images a crawl or import ingests per transaction (its cursor moves then).",
    )

    @field_validator("detector_thresholds", "detector_prompts", mode="before")
    @classmethod
    def _parse_detector_tables(cls, value: object, info: ValidationInfo) -> object:
        import json

        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return {}
        if info.field_name == "detector_prompts" and not text.startswith("{"):
            try:
                text = Path(text).expanduser().read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read the prompts file: {exc}") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from None

    @field_validator("detector_thresholds", "detector_prompts")
    @classmethod
    def _check_detector_tables(cls, value: dict, info: ValidationInfo) -> dict:
        from modomo.analysis.taxonomy import CATEGORIES, PromptTable

        unknown = sorted(set(value) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown taxonomy categories {unknown}")
        if info.field_name == "detector_thresholds":
            bad = {k: v for k, v in value.items() if not 0 <= v <= 1}
            if bad:
                raise ValueError(f"thresholds must be within 0-1: {bad}")
        else:
            PromptTable(value)  # each prompt names exactly one category
        return value

    @field_validator("queue_rate_limits", mode="before")
    @classmethod
    def _parse_queue_rate_limits(cls, value: object) -> object:
        # Queue names are checked against modomo.celery_app.QUEUES where the Celery settings
        # are built (celery_app imports this module, so it cannot be imported from here).
        import json
        import re

        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f'not JSON ({exc}); expected e.g. {{"scraping": "10/m"}}'
                ) from None
        if not isinstance(value, dict):
            raise ValueError('expected a JSON object of queue -> rate, e.g. {"scraping": "10/m"}')
        for queue, rate in value.items():
            if not isinstance(rate, str) or not re.fullmatch(r"\d+(\.\d+)?/[smh]", rate.strip()):
                raise ValueError(
                    f"bad rate {rate!r} for queue {queue!r}: expected N/s, N/m or N/h "
                    "(tasks per second, minute or hour, per worker), e.g. '10/m'"
                )
        return {str(queue): rate.strip() for queue, rate in value.items()}

    # --- colour analysis ----------------------------------------------------------------
    palette_size: Annotated[int, Field(ge=1, le=16)] = Field(
        default=5, validation_alias=_env("palette_size"), description="Colours per palette (k)."
    )

    # --- AI models (see modomo.models) -------------------------------------------------
    device: str = Field(
        default="auto",
        validation_alias=_env("device"),
        description="Torch device for the models: auto (cuda, else mps, else cpu), cpu, cuda, "
        "cuda:N or mps.",
    )
    half_precision: bool = Field(
        default=True,
        validation_alias=_env("half_precision"),
        description="Run the models in float16 on CUDA where they support it.",
    )
    model_dir: Path | None = Field(
        default=None,
        validation_alias=_env("model_dir"),
        description="Local weight cache filled by `modomo models pull` (default: DATA_DIR/models).",
    )
    detector: Literal["yolo", "grounding-dino", "owlv2", "yoloe"] = Field(
        default="yolo",
        validation_alias=_env("detector"),
        description="Detector backend: yolo (closed class set mapped to the taxonomy), "
        "grounding-dino, owlv2 or yoloe (open vocabulary, every category from its text "
        "prompts).",
    )
    detector_weights: str = Field(
        default="",
        validation_alias=_env("detector_weights"),
        description="Detector weights: an ultralytics weight name or local .pt (yolo, yoloe), "
        "a Hugging Face hub id or local folder (grounding-dino, owlv2); default: yolo11n.pt, "
        "IDEA-Research/grounding-dino-tiny, google/owlv2-base-patch16-ensemble, "
        "yoloe-11s-seg.pt.",
    )
    detector_threshold: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.25,
        validation_alias=_env("detector_threshold"),
        description="Minimum detection confidence (categories without their own threshold).",
    )
    detector_thresholds: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        validation_alias=_env("detector_thresholds"),
        description='Per-category minimum confidence over the default, JSON: {"rug": 0.4}.',
    )
    detector_nms_iou: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.7,
        validation_alias=_env("detector_nms_iou"),
        description="Boxes overlapping more than this IoU are one object, whatever their "
        "categories (1: keep all).",
    )
    detector_prompts: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=dict,
        validation_alias=_env("detector_prompts"),
        description="Open-vocabulary prompts replacing the taxonomy's for some categories: "
        'JSON {"rug": ["rug", "area rug"]} or the path of a JSON file.',
    )
    detector_max_detections: PositiveInt = Field(
        default=100,
        validation_alias=_env("detector_max_detections"),
        description="At most this many objects per image (highest confidence first).",
    )
    detector_image_size: PositiveInt = Field(
        default=640,
        validation_alias=_env("detector_image_size"),
        description="YOLO inference size in pixels (longest side).",
    )
    segmenter_weights: str = Field(
        default="facebook/sam2.1-hiera-tiny",
        validation_alias=_env("segmenter_weights"),
        description="SAM 2.1 weights: a Hugging Face hub id or a local folder.",
    )
    depth_weights: str = Field(
        default="depth-anything/Depth-Anything-V2-Small-hf",
        validation_alias=_env("depth_weights"),
        description="Depth Anything V2 weights: a Hugging Face hub id or a local folder.",
    )
    depth_fallback_weights: str = Field(
        default="Intel/zoedepth-nyu-kitti",
        validation_alias=_env("depth_fallback_weights"),
        description="ZoeDepth weights used when the primary depth model fails ('' for none).",
    )
    ai_batch_size: PositiveInt = Field(
        default=8,
        validation_alias=_env("ai_batch_size"),
        description="Images per model call (halved on CUDA out-of-memory).",
    )
    ai_host_threads: Annotated[int, Field(ge=0, le=256)] = Field(
        default=0,
        validation_alias=_env("ai_host_threads"),
        description=(
            "Host processes (or threads, see MODOMO_AI_HOST_PROCESSES) per AI worker for"
            " decoding and per-scene post-processing while the device runs the next batch;"
            " 0: the cores the worker may use, minus one."
        ),
    )
    ai_host_processes: bool = Field(
        default=True,
        validation_alias=_env("ai_host_processes"),
        description=(
            "Run the AI worker's host work in MODOMO_AI_HOST_THREADS separate processes, each"
            " scene decoded and finished in one of them (scales across cores: palettes and"
            " RLE hold the GIL); false: threads in the worker process, less memory."
        ),
    )
    ai_batches_in_flight: Annotated[int, Field(ge=1, le=16)] = Field(
        default=1,
        validation_alias=_env("ai_batches_in_flight"),
        description=(
            "Batches an AI worker decodes ahead of the device, and batches whose host work may"
            " still run while the next is inferred (bounds its memory)."
        ),
    )
    torch_threads: Annotated[int, Field(ge=0, le=256)] = Field(
        default=0,
        validation_alias=_env("torch_threads"),
        description=(
            "Torch CPU threads in a worker; 0: the cores the worker may use, less an AI"
            " worker's host processes or threads (at least 1)."
        ),
    )
    depth_max_side: Annotated[int, Field(ge=16, le=16384)] = Field(
        default=1024,
        validation_alias=_env("depth_max_side"),
        description=(
            "Longest side in pixels of a stored depth map (kept at the depth model's output"
            " resolution below it)."
        ),
    )
    ai_warmup: bool = Field(
        default=False,
        validation_alias=_env("ai_warmup"),
        description="AI workers load their models when a child starts, before the first task.",
    )
    worker_preload: bool = Field(
        default=True,
        validation_alias=_env("worker_preload"),
        description=(
            "Worker children import the heavy libraries of their queues (torch, transformers,"
            " ultralytics, datasets) when they start, outside any task's time limit."
        ),
    )
    worker_proc_alive_timeout: PositiveFloat = Field(
        default=300.0,
        validation_alias=_env("worker_proc_alive_timeout"),
        description="Seconds a new worker child may take to start (model warm-up included).",
    )

    # --- classification and de-duplication (see modomo.analysis.classify, .dedup) -------
    clip_weights: str = Field(
        default="openai/clip-vit-base-patch32",
        validation_alias=_env("clip_weights"),
        description="CLIP weights for scene classification and embeddings: a Hugging Face hub "
        "id or a local folder.",
    )
    embedding_dim: PositiveInt = Field(
        default=512,
        validation_alias=_env("embedding_dim"),
        description="Dimension of stored image embeddings (the CLIP model's projection_dim; "
        "fixed by the database migration as pgvector's vector(d)).",
    )
    room_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ROOM_TYPES),
        validation_alias=_env("room_types"),
        description="Comma-separated room-type labels CLIP chooses from.",
    )
    styles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_STYLES),
        validation_alias=_env("styles"),
        description="Comma-separated interior-style labels CLIP chooses from.",
    )
    classify_min_probability: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.4,
        validation_alias=_env("classify_min_probability"),
        description="Below this top-1 probability a label is stored as 'unknown'.",
    )
    classify_top_k: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3,
        validation_alias=_env("classify_top_k"),
        description="Labels kept, with their probabilities, per attribute.",
    )
    phash_max_distance: Annotated[int, Field(ge=0, le=24)] = Field(
        default=10,
        validation_alias=_env("phash_max_distance"),
        description="Two scenes whose 64-bit pHashes differ in at most this many bits are "
        "near-duplicates.",
    )
    semantic_min_similarity: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.95,
        validation_alias=_env("semantic_min_similarity"),
        description="Two scenes whose embeddings' cosine similarity is at least this are "
        "semantic near-duplicates (1 disables).",
    )

    # --- export (see modomo.export) -------------------------------------------------------
    hf_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("hf_token", "HF_TOKEN"),
        description="Hugging Face token for `modomo export --push-to-hub` (write access).",
    )

    # --- API service (see modomo.api) ------------------------------------------------
    api_host: str = Field(
        default="127.0.0.1",
        validation_alias=_env("api_host"),
        description="Address `modomo api` binds to (loopback only while auth is disabled).",
    )
    api_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8000, validation_alias=_env("api_port")
    )
    auth_disabled: bool = Field(
        default=False,
        validation_alias=_env("auth_disabled"),
        description="Local use only: no credentials asked, and only loopback clients served.",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=_env("jwt_secret", "SUPABASE_JWT_SECRET"),
        description="HS256 secret of Supabase-issued JWTs (the project's JWT secret).",
    )
    jwt_jwks_url: str = Field(
        default="",
        validation_alias=_env("jwt_jwks_url"),
        description="JWKS URL for asymmetric JWTs (Supabase: "
        "SUPABASE_URL/auth/v1/.well-known/jwks.json).",
    )
    jwt_audience: str = Field(
        default="authenticated",
        validation_alias=_env("jwt_audience"),
        description="Required `aud` claim of JWTs ('' to skip the check).",
    )
    jwt_admin_claim: str = Field(
        default="app_metadata.role",
        validation_alias=_env("jwt_admin_claim"),
        description="Dotted path of the JWT claim that grants the admin role.",
    )
    jwt_admin_value: str = Field(
        default="admin",
        validation_alias=_env("jwt_admin_value"),
        description="Value of that claim (or an element of it, for a list) meaning admin.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("cors_origins"),
        description="Comma-separated browser origins allowed to call the API (none by default).",
    )
    api_rate_limit: str = Field(
        default="120/minute",
        validation_alias=_env("api_rate_limit"),
        description="Per-key limit on the job-creating POST endpoints "
        "(e.g. '10/second;300/minute').",
    )
    api_max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=1024 * 1024,
        validation_alias=_env("api_max_body_bytes"),
        description="Largest request body the API reads, in bytes (413 beyond; a larger "
        "Content-Length is refused before any of the body is read).",
    )
    api_max_header_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=16 * 1024,
        validation_alias=_env("api_max_header_bytes"),
        description="Largest total size of a request's headers (names and values), in "
        "bytes (431 beyond).",
    )
    flower_user: str = Field(default="admin", validation_alias=_env("flower_user"))
    flower_password: SecretStr | None = Field(
        default=None,
        validation_alias=_env("flower_password"),
        description="Flower's basic-auth password; `modomo flower` refuses to start without one.",
    )
    flower_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=5555, validation_alias=_env("flower_port")
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=_env("log_level")
    )

    @field_validator("cors_origins", "room_types", "styles", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("import_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("import_roots")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        roots = [root.expanduser() for root in value]
        relative = [str(root) for root in roots if not root.is_absolute()]
        if relative:
            raise ValueError(f"import roots must be absolute folders, not {', '.join(relative)}")
        return [root.resolve() for root in roots]

    @field_validator("room_types", "styles")
    @classmethod
    def _check_labels(cls, value: list[str]) -> list[str]:
        if len(set(value)) < 2 or len(set(value)) != len(value):
            raise ValueError("give at least two distinct comma-separated labels")
        if "unknown" in value:
            raise ValueError("'unknown' is what an unsure classification answers; not a label")
        return value

    @field_validator("api_rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value)  # raises ValueError naming the bad part
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator(
        "redis_url",
        "broker_url",
        "result_backend",
        "database_url",
        "supabase_url",
        "houzz_base_url",
    )
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if not value:
            return value
        parts = urlsplit(value)
        if not parts.scheme or not (parts.netloc or parts.path):
            raise ValueError(f"not a URL: {value!r} (expected scheme://host/...)")
        return value

    @field_validator("redis_url", "broker_url", "result_backend")
    @classmethod
    def _check_celery_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A port that is a number, and a scheme kombu (brokers) or Celery (result backends)
        knows, so a typo fails at start-up naming the variable rather than deep in kombu."""
        if not value:
            return value
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError for "host:notaport"
        except ValueError:
            raise ValueError(f"the port is not a number (host:port): {parts.netloc!r}") from None
        scheme = parts.scheme.split("+", 1)[0]
        if info.field_name == "broker_url":
            from kombu.transport import TRANSPORT_ALIASES

            known = set(TRANSPORT_ALIASES)
        elif info.field_name == "result_backend":
            from celery.app.backends import BACKEND_ALIASES

            known = set(BACKEND_ALIASES)
        else:
            known = {"redis", "rediss", "unix"}
        if scheme not in known:
            common = sorted(known & {"redis", "rediss", "amqp", "amqps", "sqla", "db"})
            raise ValueError(
                f"unknown scheme {parts.scheme!r} (expected one of {', '.join(common)}, …)"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        # Supabase and Heroku hand out postgres:// URLs; SQLAlchemy wants a driver name.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    # --- derived values -------------------------------------------------------------------
    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        # Unset URLs fall back to REDIS_URL, then to the embedded default under the data dir.
        self.broker_url = (
            self.broker_url or self.redis_url or f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"
        )
        self.result_backend = (
            self.result_backend
            or self.redis_url
            or f"db+sqlite:///{self.data_dir / 'results.sqlite'}"
        )
        self.database_url = self.database_url or f"sqlite:///{self.data_dir / 'modomo.sqlite'}"
        self.artifact_url = self.artifact_url or str(self.data_dir / "artifacts")
        self.model_dir = (self.model_dir or self.data_dir / "models").expanduser().resolve()
        self.detector_weights = self.detector_weights or DETECTOR_WEIGHTS[self.detector]
        return self

    @property
    def model_cache(self) -> Path:
        """The local weight cache (``MODOMO_MODEL_DIR``, default ``DATA_DIR/models``)."""
        assert self.model_dir is not None  # filled in by _fill_defaults
        return self.model_dir

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: SQLite broker and an in-process worker."""
        return self.broker_url.startswith("sqla+sqlite")

    @property
    def redis_visibility_timeout(self) -> int:
        """Seconds before Redis redelivers an unacknowledged task; longer than the hard limit."""
        return self.visibility_timeout or 2 * self.task_time_limit

    def warnings(self) -> list[str]:
        """Settings that are accepted but do not do what their name suggests, one line each
        (printed at start-up by the CLI and logged by workers)."""
        notes = []
        supabase = [
            name
            for name, value in (
                ("SUPABASE_URL", self.supabase_url),
                ("SUPABASE_ANON_KEY", self.supabase_anon_key),
            )
            if value
        ]
        if supabase and self.database_url.startswith("sqlite"):
            local = self.database_url[len("sqlite:///") :]
            notes.append(
                f"{' and '.join(supabase)} {'is' if len(supabase) == 1 else 'are'} set, but "
                f"job records go to the local SQLite file {local}: "
                "set DATABASE_URL to the Supabase project's Postgres connection string "
                "(Project Settings > Database > Connection string, URI)"
            )
        return notes

    def check(self) -> Settings:
        """Cross-field checks; raises ValueError naming the variables."""
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError(
                "MODOMO_TASK_SOFT_TIME_LIMIT must be smaller than MODOMO_TASK_TIME_LIMIT "
                f"({self.task_soft_time_limit} >= {self.task_time_limit})"
            )
        if self.redis_visibility_timeout <= self.task_time_limit:
            raise ValueError(
                "MODOMO_VISIBILITY_TIMEOUT must be longer than MODOMO_TASK_TIME_LIMIT "
                f"({self.redis_visibility_timeout} <= {self.task_time_limit}), or Redis "
                "redelivers tasks that are still running"
            )
        if self.stale_job_timeout <= self.task_time_limit:
            raise ValueError(
                "MODOMO_STALE_JOB_TIMEOUT must be longer than MODOMO_TASK_TIME_LIMIT "
                f"({self.stale_job_timeout} <= {self.task_time_limit}), or the reaper re-sends "
                "batches that are still running"
            )
        return self


def _variable_name(loc: str) -> str:
    """The environment variable behind an error location (a field or one of its aliases)."""
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if loc == name or loc in choices:
            # Errors carry the first alias; name the variable that was actually set.
            present = [choice for choice in choices if choice in os.environ]
            return present[0] if present else (choices[0] if choices else loc)
    return loc


def load_settings(**overrides: object) -> Settings:
    """Read and check the settings from the environment (and ``overrides``, by field name).

    Raises:
        ConfigError: a value is missing or malformed; the message names the variable.
    """
    try:
        return Settings(**overrides).check()  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            lines.append(f"{_variable_name(field)}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once.

    Raises:
        ConfigError: see :func:`load_settings`.
    """
    return load_settings()
