"""Compatibility alias: this module lives at :mod:`kit.learn.rewards` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.rewards is kit.learn.rewards``).
"""

import sys

import kit.learn.rewards as _moved

sys.modules[__name__] = _moved
