"""The module :mod:`modomo.tasks.retry` itself (see the package docstring)."""

import sys

from modomo.tasks import retry as _module

sys.modules[__name__] = _module
