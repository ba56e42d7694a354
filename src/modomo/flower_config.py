"""Flower's options for Modomo: basic auth and a loopback address, in one place.

Both ways of starting Flower use them: ``modomo flower``, and ``celery -A celery_app flower``
typed from the repository root as the original Modomo scraper's guide has it (Flower reads
``flowerconfig.py`` from its working directory, and the one at the repository root takes its
options from :func:`flower_options`). Flower never starts unauthenticated: without
``MODOMO_FLOWER_PASSWORD`` both refuse to start.

The broker transport options (``priority_steps`` and the rest) need nothing here: Flower
reads them from the Celery app it is started with, which is Modomo's either way, so its queue
lengths count every Redis priority sub-list.
"""

from __future__ import annotations

from dataclasses import dataclass

from modomo.config import ConfigError, Settings, get_settings

__all__ = ["LOOPBACK", "FlowerOptions", "NoFlowerPassword", "flower_options"]

LOOPBACK = "127.0.0.1"
"""Where Flower listens unless told otherwise (``modomo flower --address``, ``--address=``)."""


class NoFlowerPassword(ConfigError):
    """``MODOMO_FLOWER_PASSWORD`` is not set: Flower would start without authentication."""


@dataclass(frozen=True)
class FlowerOptions:
    """Flower's own option names and values (``flowerconfig.py`` binds them by name).

    Attributes:
        basic_auth: the accepted ``user:password`` credentials (one).
        address: the address to bind.
        port: the port to listen on.
    """

    basic_auth: list[str]
    address: str
    port: int


def flower_options(settings: Settings | None = None) -> FlowerOptions:
    """Basic auth from ``MODOMO_FLOWER_USER`` / ``MODOMO_FLOWER_PASSWORD``, the loopback
    address and ``MODOMO_FLOWER_PORT``.

    Raises:
        NoFlowerPassword: no password is configured (the message names the variable).
        ConfigError: another setting is malformed.
    """
    settings = settings or get_settings()
    password = settings.flower_password.get_secret_value() if settings.flower_password else ""
    if not password:
        raise NoFlowerPassword(
            "Flower needs a password: set MODOMO_FLOWER_PASSWORD "
            "(basic auth is required; Modomo never starts Flower without it)"
        )
    return FlowerOptions(
        basic_auth=[f"{settings.flower_user}:{password}"],
        address=LOOPBACK,
        port=settings.flower_port,
    )
