"""Self-supervised methods, registered by name in :data:`METHODS`.

Importing this package registers every built-in method.
"""

from selfsup.methods import simclr, tico, vicreg  # noqa: F401  (registration side effects)
from selfsup.methods.base import METHODS, Method, Progress, StepOutput, register_method
from selfsup.methods.momentum import MomentumMethod

__all__ = ["METHODS", "Method", "MomentumMethod", "Progress", "StepOutput", "register_method"]
