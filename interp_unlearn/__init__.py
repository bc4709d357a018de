"""interp_unlearn: find where a model keeps knowledge, remove it, and attack the removal."""

__version__ = "0.1.0"

from interp_unlearn import _compat

_compat.install()
del _compat
