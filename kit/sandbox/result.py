"""Compatibility alias: this module lives at :mod:`kit.runtime.sandbox.result` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.sandbox.result is kit.runtime.sandbox.result``).
"""

import sys

import kit.runtime.sandbox.result as _moved

sys.modules[__name__] = _moved
