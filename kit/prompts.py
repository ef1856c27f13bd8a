"""Compatibility alias: this module lives at :mod:`kit.runtime.prompts` now (docs/architecture.md: layers).

Old imports keep working and give the very same module object (``kit.prompts is kit.runtime.prompts``).
"""

import sys

import kit.runtime.prompts as _moved

sys.modules[__name__] = _moved
