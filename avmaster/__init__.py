"""avmaster: audio-visual question answering expert models (AV-Master and its ablations)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# Modules that were renamed: the old names still import (with a DeprecationWarning).
MOVED_MODULES = {"avmaster.run": "avmaster.training", "avmaster.io": "avmaster.atomic"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a renamed module's old name as the new module itself."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} was renamed {new}; import that instead",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
