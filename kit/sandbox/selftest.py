"""Compatibility alias: this module lives at :mod:`kit.runtime.sandbox.selftest` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.sandbox.selftest is kit.runtime.sandbox.selftest``).
"""

import sys

import kit.runtime.sandbox.selftest as _moved

sys.modules[__name__] = _moved
