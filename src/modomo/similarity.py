"""Nearest scenes by image embedding (cosine similarity of L2-normalised CLIP embeddings).

With pgvector (``scenes.clip_embedding`` is a ``vector(d)`` column) the database answers with
its HNSW index (``ORDER BY clip_embedding <=> q``). Otherwise the stored embeddings are read in
chunks and scored exactly with NumPy, keeping the running top k: correct everywhere, linear in
the number of scenes (install pgvector, as Supabase has, for large catalogues).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from modomo.catalog import SceneNotFound
from modomo.db.models import Scene
from modomo.db.session import session_scope

__all__ = ["NoEmbedding", "embedding_storage", "iter_embeddings", "similar_scenes"]

CHUNK = 4096
_storage: dict[str, str] = {}


class NoEmbedding(LookupError):
    """The scene has no embedding yet (it has not been classified)."""


def embedding_storage(session: Session) -> str:
    """How ``scenes.clip_embedding`` is stored: ``vector`` (pgvector), ``array``
    (``double precision[]``) or ``json`` (SQLite). Cached per database URL."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    url = engine.url.render_as_string(hide_password=True)
    if url not in _storage:
        if engine.dialect.name != "postgresql":
            _storage[url] = "json"
        else:
            type_name = session.scalar(
                text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'scenes'::regclass AND attname = 'clip_embedding'"
                )
            )
            _storage[url] = "vector" if str(type_name).startswith("vector") else "array"
    return _storage[url]


def iter_embeddings(
    session: Session, chunk: int = CHUNK
) -> Iterator[tuple[list[uuid.UUID], np.ndarray]]:
    """Every stored scene embedding, in chunks of ``(ids, (n, d) float32 array)``, by id."""
    last: uuid.UUID | None = None
    while True:
        query = select(Scene.id, Scene.clip_embedding).where(Scene.clip_embedding.is_not(None))
        if last is not None:
            query = query.where(Scene.id > last)
        rows = session.execute(query.order_by(Scene.id).limit(chunk)).all()
        if not rows:
            return
        last = rows[-1].id
        rows = [r for r in rows if r.clip_embedding]  # rows written before 0004 hold JSON null
        if rows:
            yield [r.id for r in rows], np.asarray([r.clip_embedding for r in rows], np.float32)


def _scene_embedding(session: Session, scene_id: uuid.UUID) -> list[float]:
    row = session.execute(
        select(Scene.id, Scene.clip_embedding).where(Scene.id == scene_id)
    ).first()
    if row is None:
        raise SceneNotFound(f"no scene {scene_id}")
    if row.clip_embedding is None:
        raise NoEmbedding(
            f"scene {scene_id} has no embedding yet: classify it first (`modomo classify`)"
        )
    return list(row.clip_embedding)


def _exact_top_k(
    session: Session, query: np.ndarray, exclude: uuid.UUID, k: int
) -> list[tuple[uuid.UUID, float]]:
    best_ids: list[uuid.UUID] = []
    best = np.empty(0, np.float32)
    for ids, vectors in iter_embeddings(session):
        scores = vectors @ query
        keep = [i for i, sid in enumerate(ids) if sid != exclude]
        candidates = np.concatenate([best, scores[keep]])
        names = best_ids + [ids[i] for i in keep]
        order = np.argsort(-candidates, kind="stable")[:k]
        best, best_ids = candidates[order], [names[i] for i in order]
    return list(zip(best_ids, best.tolist(), strict=True))


def similar_scenes(scene_id: uuid.UUID, k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` scenes whose embeddings are most similar to this scene's, most similar first.

    Returns:
        ``[{"scene_id", "similarity", "source_key", "room_type", "style", "scene_type",
        "width", "height"}]``; ``similarity`` is the cosine similarity in [-1, 1].

    Raises:
        SceneNotFound: no such scene.
        NoEmbedding: the scene has no embedding yet.
        ValueError: ``k`` < 1.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    with session_scope() as session:
        vector = _scene_embedding(session, scene_id)
        if embedding_storage(session) == "vector":
            found = [
                (row.id, float(row.similarity))
                for row in session.execute(
                    text(
                        "SELECT id, 1 - (clip_embedding <=> CAST(:q AS vector)) AS similarity "
                        "FROM scenes WHERE clip_embedding IS NOT NULL AND id != :id "
                        "ORDER BY clip_embedding <=> CAST(:q AS vector) LIMIT :k"
                    ),
                    {"q": vector, "id": scene_id, "k": k},
                )
            ]
        else:
            query = np.asarray(vector, np.float32)
            norm = max(float(np.linalg.norm(query)), 1e-12)
            found = _exact_top_k(session, query / norm, scene_id, k)
        scenes = {
            s.id: s
            for s in session.scalars(select(Scene).where(Scene.id.in_([i for i, _ in found])))
        }
        return [
            {
                "scene_id": str(sid),
                "similarity": round(similarity, 6),
                "source_key": scenes[sid].source_key,
                "room_type": scenes[sid].room_type,
                "style": scenes[sid].style,
                "scene_type": scenes[sid].scene_type,
                "width": scenes[sid].width,
                "height": scenes[sid].height,
            }
            for sid, similarity in found
            if sid in scenes
        ]
