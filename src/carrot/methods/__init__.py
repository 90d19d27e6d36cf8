"""Training methods as plug-ins: one file per method, one registry.

``method=NAME`` in a config picks a registered :class:`Method`; ``method=BASE+ADDED`` adds an
addable method's term (e.g. CARROT's) on top of another. Every module of this package is
imported here, so adding a method is adding a file (see docs/methods.md). Methods of other
installed packages join through the entry-point group ``carrot.methods``
(:func:`load_plugins`, run when the registry is first read).
"""

import importlib
import pkgutil

from carrot.methods.base import (
    ENTRY_POINT_GROUP,
    LossResult,
    Method,
    MethodContext,
    MethodError,
    Step,
    load_plugins,
    register_method,
    registered,
    sections,
)
from carrot.methods.lookup import build_method, default_method, get_method, method_names

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ENTRY_POINT_GROUP",
    "LossResult",
    "Method",
    "MethodContext",
    "MethodError",
    "Step",
    "build_method",
    "default_method",
    "get_method",
    "load_plugins",
    "method_names",
    "register_method",
    "registered",
    "sections",
]
