"""The module :mod:`modomo.models.registry` itself (see the package docstring)."""

import sys

from modomo.models import registry as _module

sys.modules[__name__] = _module
