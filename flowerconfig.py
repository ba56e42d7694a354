"""Flower's configuration for ``celery -A celery_app flower`` run from the repository root, as
in the original Modomo scraper's guide (Flower reads ``flowerconfig.py`` from its working
directory). It gives the same basic auth (``MODOMO_FLOWER_USER`` / ``MODOMO_FLOWER_PASSWORD``),
loopback address and port (``MODOMO_FLOWER_PORT``) as ``modomo flower``; options on the
command line (``--port=5555``) still win. Without a password Flower does not start.

Flower executes this file and takes every top-level name that is one of its options, so
helpers here start with an underscore.
"""

from modomo.config import ConfigError as _ConfigError
from modomo.flower_config import flower_options as _flower_options

try:
    _options = _flower_options()
except _ConfigError as _exc:
    raise SystemExit(f"flowerconfig.py: {_exc}") from None

basic_auth = _options.basic_auth
address = _options.address
port = _options.port
