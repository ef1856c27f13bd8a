"""Compatibility package: the engines moved to :mod:`kit.runtime.engines` (docs/architecture.md: layers).

``import kit.engines`` and ``kit.engines.<module>`` keep working; each submodule here is an alias of the moved one.
"""

from kit.runtime.engines import *  # noqa: F403
from kit.runtime.engines import __all__  # noqa: F401
