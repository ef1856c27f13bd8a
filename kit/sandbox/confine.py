"""Compatibility alias: this module lives at :mod:`kit.runtime.sandbox.confine` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.sandbox.confine is kit.runtime.sandbox.confine``).
"""

import sys

import kit.runtime.sandbox.confine as _moved

sys.modules[__name__] = _moved
