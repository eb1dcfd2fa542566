"""san-ext: SAN (Slicing Adversarial Network) layers, losses, conversion and sampling tools for GAN training.

The top-level names load on first use (PEP 562), so tools that need no torch (``san-patch``) start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = '0.1.0'

# public name -> (submodule, attribute or None for the submodule itself)
_EXPORTS = {
    'losses': ('losses', None),
    'SANDiscriminator': ('convert', 'SANDiscriminator'),
    'sanify': ('convert', 'sanify'),
    'SANConv2d': ('layers', 'SANConv2d'),
    'SANEmbedding': ('layers', 'SANEmbedding'),
    'SANLinear': ('layers', 'SANLinear'),
    'is_san_layer': ('layers', 'is_san_layer'),
    'normalize_san_weights': ('layers', 'normalize_san_weights'),
    'san_param_groups': ('layers', 'san_param_groups'),
}
__all__ = ['SANConv2d', 'SANDiscriminator', 'SANEmbedding', 'SANLinear', 'is_san_layer', 'losses',
           'normalize_san_weights', 'san_param_groups', 'sanify']  # = sorted(_EXPORTS)

if TYPE_CHECKING:
    from . import losses
    from .convert import SANDiscriminator, sanify
    from .layers import SANConv2d, SANEmbedding, SANLinear, is_san_layer, normalize_san_weights, san_param_groups


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    module_name, attr = _EXPORTS[name]
    module = importlib.import_module(f'{__name__}.{module_name}')
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
