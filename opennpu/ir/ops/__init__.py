"""Op definitions. Importing this package registers every op module found in it (one op family per file)."""

import importlib
import pkgutil

from .registry import REGISTRY, OpDef, Spec, get_op, register

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "registry":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["REGISTRY", "OpDef", "Spec", "get_op", "register"]
