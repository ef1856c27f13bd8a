"""Compatibility package: the sandbox moved to :mod:`kit.runtime.sandbox` (docs/architecture.md: layers).

``import kit.sandbox`` and ``kit.sandbox.<module>`` keep working; each submodule here is an alias of the moved one.
"""

from kit.runtime.sandbox import *  # noqa: F403
from kit.runtime.sandbox import __all__  # noqa: F401
