"""Per-credential rate limits on the job-creating endpoints (the ``limits`` library).

The limit is ``MODOMO_API_RATE_LIMIT`` (``limits`` notation, e.g. ``10/second;300/minute``),
counted per principal with a sliding-window counter. Counters live in Redis when Redis is
configured, so every API process and replica shares them; otherwise in this process's memory.
A request over the limit gets 429 with ``Retry-After`` in seconds; while the counters cannot be
reached (Redis down) the request is refused with 503 and the reason, never let through uncounted.
"""

from __future__ import annotations

import functools
import math
import time

from fastapi import HTTPException, status
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from redis import RedisError

from modomo.api.auth import CurrentUser
from modomo.api.keys import Principal
from modomo.config import get_settings

__all__ = ["enqueue_limit"]


@functools.cache
def _limiter() -> tuple[SlidingWindowCounterRateLimiter, tuple[RateLimitItem, ...]]:
    settings = get_settings()
    storage = storage_from_string(
        settings.redis_url if settings.redis_url else "memory://",
        **({"socket_timeout": 2} if settings.redis_url else {}),
    )
    assert isinstance(storage, Storage)  # a synchronous storage for a synchronous limiter
    return SlidingWindowCounterRateLimiter(storage), tuple(parse_many(settings.api_rate_limit))


def enqueue_limit(principal: CurrentUser) -> Principal:
    """FastAPI dependency: the caller, once counted against its rate limit.

    Raises:
        HTTPException: 429 with ``Retry-After`` when the caller is over a limit; 503 when
            the counters' store cannot be reached.
    """
    limiter, items = _limiter()
    for item in items:
        try:
            allowed = limiter.hit(item, "enqueue", principal.subject)
        except (RedisError, StorageError, OSError) as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"rate-limit counters unreachable: {type(exc).__name__}: {exc}",
            ) from None
        if not allowed:
            reset = limiter.get_window_stats(item, "enqueue", principal.subject).reset_time
            retry_after = max(1, math.ceil(reset - time.time()))
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=f"rate limit {item} exceeded for this credential",
                headers={"Retry-After": str(retry_after)},
            )
    return principal
