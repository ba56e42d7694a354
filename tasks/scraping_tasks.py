"""The module :mod:`modomo.tasks.scraping_tasks` itself (see the package docstring)."""

import sys

from modomo.tasks import scraping_tasks as _module

sys.modules[__name__] = _module
