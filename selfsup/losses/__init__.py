"""Self-supervised losses as plain functions, one documented file per loss.

Every function takes embeddings of shape (N, D), cites its paper's equation, computes in
float32, and has a ``gather_distributed`` switch where the loss needs the global batch. Each
module lists its public functions in ``__all__``; they are all re-exported here, so
``from selfsup.losses import nt_xent, vicreg, tico`` works for every loss.
"""

import importlib
import pkgutil

__all__: list[str] = []

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        _loaded = importlib.import_module(f"{__name__}.{_module}")
        for _name in getattr(_loaded, "__all__", []):
            globals()[_name] = getattr(_loaded, _name)
            __all__.append(_name)
