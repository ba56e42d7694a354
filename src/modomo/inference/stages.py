"""The detection pipeline's stages, and how a scene's failure names the stage it failed at."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["STAGES", "failed_stage", "parse_stages", "stage"]

STAGES: tuple[str, ...] = ("detect", "segment", "depth", "colors")
"""The pipeline's stages, in order. ``colors`` is the scene palette plus, with detections,
each object's palette over its mask (or its box without ``segment``)."""

_STAGE_NOTE = "modomo: failed at stage "


def failed_stage(exc: BaseException) -> str | None:
    """The pipeline stage a scene's exception failed at (``detect``, ``segment``, ``depth``
    or ``colors``), or None when it does not say.

    The stage travels as a note on the exception itself (``exc.add_note``), so its type is
    untouched: out-of-memory detection and the caller's ``except`` clauses still see it.
    """
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(_STAGE_NOTE):
            return note.removeprefix(_STAGE_NOTE)
    return None


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Note ``name`` on an exception raised in the block, unless an inner block did."""
    try:
        yield
    except Exception as exc:
        if failed_stage(exc) is None:
            exc.add_note(f"{_STAGE_NOTE}{name}")
        raise


def parse_stages(text: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``--pipeline``: a comma-separated subset of :data:`STAGES` or ``full``.

    Returns:
        The stages in pipeline order.

    Raises:
        ValueError: an unknown stage, or ``segment`` without ``detect`` (masks are prompted
            by the detector's boxes).
    """
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    names = [s for s in names if s]
    if names == ["full"]:
        return STAGES
    unknown = sorted(set(names) - set(STAGES))
    if unknown or not names:
        raise ValueError(
            f"unknown pipeline stage(s) {unknown or names}: use a comma-separated subset of "
            f"{','.join(STAGES)}, or full"
        )
    if "segment" in names and "detect" not in names:
        raise ValueError("the segment stage needs detect: masks are prompted by its boxes")
    return tuple(s for s in STAGES if s in names)
