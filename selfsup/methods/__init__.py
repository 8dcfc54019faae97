"""Self-supervised methods, registered by name in :data:`METHODS`.

Importing this package imports every module in it, which registers every built-in method: adding
a method is adding one file with a ``@register_method`` class.
"""

import importlib
import pkgutil

from selfsup.methods.base import METHODS, Method, Progress, StepOutput, register_method
from selfsup.methods.build import TABLE_ORDER, build_method, method_names, split_variant
from selfsup.methods.momentum import MomentumMethod

_INFRASTRUCTURE = {"base", "build", "momentum"}

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _INFRASTRUCTURE and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "METHODS",
    "Method",
    "MomentumMethod",
    "Progress",
    "StepOutput",
    "TABLE_ORDER",
    "build_method",
    "method_names",
    "register_method",
    "split_variant",
]
