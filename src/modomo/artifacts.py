"""The process's artifact store (images, masks, depth maps, exports), from the settings."""

from __future__ import annotations

import functools

from modomo.config import get_settings
from modomo.images.store import ArtifactStore

__all__ = ["artifact_store"]


@functools.cache
def artifact_store() -> ArtifactStore:
    """The artifact store at ``MODOMO_ARTIFACT_URL`` (default: DATA_DIR/artifacts)."""
    return ArtifactStore(get_settings().artifact_url)
