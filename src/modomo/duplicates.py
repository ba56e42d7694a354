"""Duplicate groups: near-duplicate scenes found by pHash and by embedding, one canonical each.

:func:`regroup` reads every usable scene's 64-bit pHash and (when classified) its CLIP
embedding, finds the pairs within ``MODOMO_PHASH_MAX_DISTANCE`` bits (multi-index hashing)
and with cosine similarity at least ``MODOMO_SEMANTIC_MIN_SIMILARITY`` (an HNSW index), joins
them into connected groups, and replaces the stored groups in one transaction. The canonical
scene of a group is its largest image, then its oldest; exports keep only canonical scenes
(:func:`canonical_only`).
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import numpy as np
from sqlalchemy import ColumnElement, Table, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from modomo.analysis.dedup import (
    choose_canonical,
    cosine_pairs,
    duplicate_groups,
    hamming_pairs,
    hex_to_uint64,
)
from modomo.db.models import DuplicateGroup, Scene, SceneStatus, utcnow
from modomo.db.session import session_scope
from modomo.similarity import iter_embeddings

__all__ = ["canonical_only", "group_count", "list_groups", "regroup"]


def _scenes(session: Session) -> tuple[list[uuid.UUID], list[str | None], np.ndarray]:
    """Usable scenes, oldest first: ids, pHashes (None where missing), pixel counts."""
    rows = session.execute(
        select(Scene.id, Scene.phash, Scene.width, Scene.height)
        .where(Scene.status != SceneStatus.FAILED, Scene.image_key.is_not(None))
        .order_by(Scene.created_at, Scene.id)
    ).all()
    pixels = np.asarray([(r.width or 0) * (r.height or 0) for r in rows], np.int64)
    return [r.id for r in rows], [r.phash for r in rows], pixels


def regroup(
    *, max_distance: int, min_similarity: float, job_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """Find near-duplicate scenes and replace the stored duplicate groups.

    Args:
        max_distance: pHash Hamming distance (bits of 64) within which two scenes are
            near-duplicates.
        min_similarity: embedding cosine similarity from which two scenes are semantic
            near-duplicates; 1 or more turns the semantic search off.
        job_id: the job that ran it, recorded on each group.

    Returns:
        ``{"scenes", "hashed", "embedded", "phash_pairs", "semantic_pairs", "groups",
        "duplicates"}``: scenes considered, how many had a pHash / an embedding, pairs
        found by each method, groups of two or more, and non-canonical scenes.
    """
    with session_scope() as session:
        ids, hashes, pixels = _scenes(session)
        index = {sid: i for i, sid in enumerate(ids)}
        hashed = [i for i, h in enumerate(hashes) if h]
        phash_pairs = np.empty((0, 2), np.int64)
        if len(hashed) > 1:
            values = hex_to_uint64([h for h in hashes if h])
            found, _ = hamming_pairs(values, max_distance)
            phash_pairs = np.asarray(hashed, np.int64)[found] if len(found) else phash_pairs
        embedded: list[int] = []
        semantic_pairs = np.empty((0, 2), np.int64)
        if min_similarity < 1:
            chunks = []
            for chunk_ids, vectors in iter_embeddings(session):
                keep = [j for j, sid in enumerate(chunk_ids) if sid in index]
                embedded.extend(index[chunk_ids[j]] for j in keep)
                chunks.append(vectors[keep])
            if len(embedded) > 1:
                found, _ = cosine_pairs(np.concatenate(chunks), min_similarity)
                if len(found):
                    semantic_pairs = np.asarray(embedded, np.int64)[found]
        pairs = np.concatenate([phash_pairs, semantic_pairs])
        labels = duplicate_groups(len(ids), pairs)
        canonical = choose_canonical(labels, pixels)
        sizes = np.bincount(labels, minlength=int(labels.max()) + 1) if len(ids) else labels
        methods: dict[int, set[str]] = {}
        for kind, found in (("phash", phash_pairs), ("embedding", semantic_pairs)):
            for label in np.unique(labels[found[:, 0]]) if len(found) else ():
                methods.setdefault(int(label), set()).add(kind)

        session.execute(
            update(Scene)
            .where(Scene.duplicate_group_id.is_not(None))
            .values(duplicate_group_id=None)
        )
        session.execute(delete(DuplicateGroup))
        now = utcnow()
        group_ids: dict[int, uuid.UUID] = {}
        for label, kinds in sorted(methods.items()):
            group = DuplicateGroup(
                id=uuid.uuid4(),
                canonical_scene_id=ids[int(canonical[np.argmax(labels == label)])],
                method="+".join(k for k in ("phash", "embedding") if k in kinds),
                size=int(sizes[label]),
                max_distance=max_distance if "phash" in kinds else None,
                min_similarity=min_similarity if "embedding" in kinds else None,
                job_id=job_id,
                created_at=now,
            )
            session.add(group)
            group_ids[label] = group.id
        session.flush()
        members = [
            {"_id": ids[i], "group": group_ids[int(labels[i])]}
            for i in range(len(ids))
            if int(labels[i]) in group_ids
        ]
        if members:
            scenes = cast(Table, Scene.__table__)
            session.connection().execute(
                update(scenes)
                .where(scenes.c.id == bindparam("_id"))
                .values(duplicate_group_id=bindparam("group")),
                members,
            )
        return {
            "scenes": len(ids),
            "hashed": len(hashed),
            "embedded": len(embedded),
            "phash_pairs": int(len(phash_pairs)),
            "semantic_pairs": int(len(semantic_pairs)),
            "groups": len(group_ids),
            "duplicates": len(members) - len(group_ids),
        }


def canonical_only() -> ColumnElement[bool]:
    """A ``WHERE`` condition on ``scenes`` keeping unique scenes and each group's canonical
    one (what an export keeps by default)."""
    canonical = select(DuplicateGroup.canonical_scene_id).where(
        DuplicateGroup.id == Scene.duplicate_group_id
    )
    return or_(Scene.duplicate_group_id.is_(None), Scene.id.in_(canonical.scalar_subquery()))


def group_count() -> int:
    """How many duplicate groups are stored."""
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(DuplicateGroup)) or 0)


def list_groups(limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Stored duplicate groups, largest first, each with its scenes (canonical first).

    Returns:
        ``[{"id", "canonical_scene_id", "method", "size", "max_distance", "min_similarity",
        "created_at", "scenes": [{"id", "canonical", "source_key", "width", "height",
        "phash"}]}]``.
    """
    with session_scope() as session:
        groups = session.scalars(
            select(DuplicateGroup)
            .order_by(DuplicateGroup.size.desc(), DuplicateGroup.id)
            .limit(limit)
            .offset(offset)
        ).all()
        members: dict[uuid.UUID, list[Scene]] = {}
        for scene in session.scalars(
            select(Scene).where(Scene.duplicate_group_id.in_([g.id for g in groups]))
        ):
            assert scene.duplicate_group_id is not None
            members.setdefault(scene.duplicate_group_id, []).append(scene)
        return [
            {
                "id": str(g.id),
                "canonical_scene_id": str(g.canonical_scene_id),
                "method": g.method,
                "size": g.size,
                "max_distance": g.max_distance,
                "min_similarity": g.min_similarity,
                "created_at": g.created_at.isoformat(),
                "scenes": [
                    {
                        "id": str(s.id),
                        "canonical": s.id == g.canonical_scene_id,
                        "source_key": s.source_key,
                        "width": s.width,
                        "height": s.height,
                        "phash": s.phash,
                    }
                    for s in sorted(
                        members.get(g.id, []),
                        key=lambda s: (s.id != g.canonical_scene_id, s.created_at),
                    )
                ],
            }
            for g in groups
        ]
