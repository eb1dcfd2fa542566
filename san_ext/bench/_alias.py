"""One-release aliases for the studies that moved from ``san_ext.bench`` to ``san_ext.studies``."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(module_name: str, study: str) -> None:
    """Make ``module_name`` (an old ``san_ext.bench.<study>``) the study module, or run its CLI under ``-m``."""
    target = importlib.import_module(f'san_ext.studies.{study}')
    if module_name == '__main__':
        warnings.warn(f'python -m san_ext.bench.{study} is now python -m san_ext.studies.{study}', FutureWarning,
                      stacklevel=2)
        target.main()
    else:
        sys.modules[module_name] = target
