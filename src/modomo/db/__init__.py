"""The job and dataset database: models, sessions and Alembic migrations."""

from modomo.db.models import (
    Base,
    ItemStatus,
    Job,
    JobScene,
    JobStatus,
    Scene,
    SceneFailure,
    SceneStatus,
    utcnow,
)
from modomo.db.session import dispose_engines, get_engine, session_factory, session_scope

__all__ = [
    "Base",
    "ItemStatus",
    "Job",
    "JobScene",
    "JobStatus",
    "Scene",
    "SceneFailure",
    "SceneStatus",
    "dispose_engines",
    "get_engine",
    "session_factory",
    "session_scope",
    "utcnow",
]
