"""Inert stand-ins for the objects of a StyleGAN-XL pickle, and read-only views of the modules they describe.

The restricted unpickler (:mod:`san_ext.legacy.unpickler`) never imports or calls what a pickle names. Each
allow-listed class becomes a :class:`Record` subclass that only stores the arguments and the state the pickle
gives it; functions, code objects and closures that dill pickles by value become records too, and nothing ever
calls or compiles them. :class:`ModuleView` then reads a recorded ``torch.nn.Module`` (its ``_parameters``,
``_buffers`` and ``_modules``) the way ``nn.Module.state_dict`` would, to feed the weight conversion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any, Optional

import torch

from .convert import ConversionError

__all__ = ['AttrRecord', 'CallRecord', 'FunctionRef', 'ModuleRef', 'ModuleView', 'PersistentRecord', 'Record',
           'RefusedCallError', 'record_class']


class RefusedCallError(RuntimeError):
    """A pickle asked to call a function or class that is only allowed as a stored reference."""


class Record:
    """An object of an allow-listed class, as the pickle describes it: constructor arguments and state, inert."""

    _module = '?'
    _name = '?'
    args: tuple = ()
    state: Any = None

    def __new__(cls, *args, **kwargs):  # NEWOBJ and copyreg paths create records without running any __init__
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD
        self.state = state

    @property
    def qualname(self) -> str:
        return f'{self._module}.{self._name}'

    @property
    def class_name(self) -> str:
        return self._name

    @property
    def dict(self) -> dict:
        """The recorded ``__dict__`` (a ``(dict, slots)`` state is reduced to its dict part)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = state[0] or {}
        return state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f'<record {self.qualname}>'


def record_class(module: str, name: str) -> type:
    """A fresh Record subclass standing for the class ``module.name`` (one per unpickler, no global cache)."""
    return type(name, (Record,), {'_module': module, '_name': name, '__module__': __name__,
                                  '__qualname__': f'Record[{module}.{name}]'})


class PersistentRecord(Record):
    """An object pickled through ``torch_utils.persistence``: the class name and state from its meta dict.

    The meta dict also carries the Python source of the module that defined the class (``module_src``). It is
    never executed; only its SHA-256 and the upstream module it looks like are kept, for the report.
    """

    _module = 'torch_utils.persistence'

    def __init__(self, class_name: str, state: Any, version: Any, module_src: str, module_hint: str) -> None:
        self._name = class_name
        self.state = state
        self.version = version
        self.module_src_sha256 = hashlib.sha256(module_src.encode('utf-8', 'replace')).hexdigest()
        self.module_hint = module_hint

    @property
    def qualname(self) -> str:
        return f'{self.module_hint}.{self._name} (persistent)'

    @property
    def init_kwargs(self) -> dict:
        """The constructor keyword arguments that persistence recorded (``_init_kwargs``)."""
        kwargs = self.dict.get('_init_kwargs') or {}
        return dict(kwargs) if isinstance(kwargs, Mapping) else {}


class ModuleRef(Record):
    """A module object (``dill`` pickles module references); attribute look-ups go through the allow-list."""

    def __init__(self, name: str) -> None:
        self._module, self._name = name, ''

    @property
    def qualname(self) -> str:
        return self._module


class FunctionRef(Record):
    """A function or class allowed only as a stored reference (a hook, a monkey-patched method). Calling it from
    the pickle is refused: nothing named by a pickle runs."""

    def __call__(self, *args, **kwargs):
        raise RefusedCallError(f'the pickle calls {self.qualname}, which is allowed only as a stored reference; '
                               'refused for safety (nothing named by a pickle is run)')


class CallRecord(Record):
    """The inert result of a recorded call (a dill code object, cell, closure or bound method rebuilt by value)."""

    def __init__(self, func: str, *args) -> None:
        self._module, self._name = 'call', func
        self.args = args
        self.attrs: dict = {}

    def __call__(self, *args, **kwargs):
        raise RefusedCallError(f'the pickle calls the result of {self._name}(...) (a function rebuilt from the '
                               'pickle); refused for safety')


class AttrRecord(Record):
    """``getattr(obj, name)`` on a recorded object: kept as a description, never evaluated."""

    def __init__(self, owner: Any, name: str) -> None:
        self._module, self._name = 'getattr', name
        self.owner = owner

    def __call__(self, *args, **kwargs):
        raise RefusedCallError(f'the pickle calls the attribute {self._name!r} of {self.owner!r}; refused for safety')


# ---------------------------------------------------------------------------------------------------------------
# Reading recorded nn.Modules.

class ModuleView:
    """Read-only view of a recorded ``torch.nn.Module`` (a Record whose state is the module's ``__dict__``)."""

    def __init__(self, record: Any, path: str = '') -> None:
        if not isinstance(record, Record):
            raise ConversionError(f'{path or "object"} is a {type(record).__name__}, not a recorded module')
        self.record, self.path = record, path

    @property
    def class_name(self) -> str:
        return self.record.class_name

    @property
    def attrs(self) -> dict:
        return self.record.dict

    def get(self, name: str, default: Any = None) -> Any:
        """A plain attribute of the module (``self.name`` upstream), e.g. ``layer_names`` or ``in_cutoff``."""
        return self.attrs.get(name, default)

    def _ordered(self, key: str) -> Mapping:
        value = self.attrs.get(key) or {}
        if not isinstance(value, Mapping):
            raise ConversionError(f'{self.path or "module"}.{key} is a {type(value).__name__}, not a dict')
        return value

    def children(self) -> Iterator[tuple[str, ModuleView]]:
        for name, child in self._ordered('_modules').items():
            if child is not None:
                yield name, ModuleView(child, f'{self.path}.{name}' if self.path else name)

    def child(self, name: str) -> ModuleView:
        """The submodule ``name``; a ConversionError names the path and the submodules that exist."""
        modules = self._ordered('_modules')
        if modules.get(name) is None:
            raise ConversionError(f'{self.path or "module"} has no submodule {name!r} '
                                  f'(has: {", ".join(modules) or "none"}); not a StyleGAN-XL network')
        return ModuleView(modules[name], f'{self.path}.{name}' if self.path else name)

    def has_child(self, name: str) -> bool:
        return self._ordered('_modules').get(name) is not None

    def tensors(self, prefix: str = '') -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers of this module tree, named as ``state_dict()`` names them."""
        out: dict[str, torch.Tensor] = {}
        for name, t in self._ordered('_parameters').items():
            if t is not None:
                out[prefix + name] = _as_tensor(t, f'{self.path}.{name}')
        skip = self.attrs.get('_non_persistent_buffers_set') or set()
        for name, t in self._ordered('_buffers').items():
            if t is not None and name not in skip:
                out[prefix + name] = _as_tensor(t, f'{self.path}.{name}')
        for name, child in self.children():
            out.update(child.tensors(f'{prefix}{name}.'))
        return out

    def find(self, class_name: str) -> Optional[ModuleView]:
        """The first module of this tree (depth first, self included) whose class is ``class_name``."""
        if self.class_name == class_name:
            return self
        for _, child in self.children():
            found = child.find(class_name)
            if found is not None:
                return found
        return None


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ConversionError(f'{where} should be a tensor, got {type(value).__name__}')
    return value.detach()
