"""Restricted unpickler for released StyleGAN-XL / StyleSAN-XL ``.pkl`` files: data in, no code run.

Those pickles hold ``torch_utils.persistence`` records (the Python source of the network module, to be ``exec``-ed
by upstream's loader) and modules pickled by path (timm, pg_modules), written by ``dill``. Python's unpickler would
import every module the file names and call whatever it asks for. This one resolves each global through
:mod:`san_ext.legacy.allowlist`: allow-listed classes become inert records, data types are rebuilt by small checked
constructors written here, and everything else is refused with :class:`RefusedGlobalError`, naming the global and
the file. Tensor storages are decoded by ``torch.load(..., weights_only=True)``.

It runs on the pure-Python unpickler (``pickle._Unpickler``, which torch's own ``PackageUnpickler`` also extends):
the C one offers no hook for ``BUILD``, which would let a pickle set attributes on any object it can reach (a
tensor's ``__setstate__``, the reader's functions), and it keeps its memo in an array sized by the largest memo index,
so that an 11-byte file asking for index 2**30 makes it allocate and zero 8 GB. Here ``BUILD`` is allowed on records,
numpy arrays and dtypes and plain dicts only, ``NEWOBJ`` on record classes only, extension codes are refused, and
every error a malformed file causes comes out as :class:`LegacyPickleError` naming the file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import reprlib
import struct
import warnings
from collections.abc import Iterable
from typing import Any, Callable, Union

import numpy as np
import torch

from .allowlist import (
    DILL_HELPERS,
    FUNCTION_REFS,
    MODULE_CLASSES,
    MODULE_DICTS,
    PERSISTENT_CLASSES,
    TORCH_NN_EXTRA,
    is_torch_nn_class,
)
from .records import (
    AttrRecord,
    CallRecord,
    FunctionRef,
    ModuleRef,
    PersistentRecord,
    Record,
    RefusedCallError,
    record_class,
)

__all__ = ['LegacyPickleError', 'RefusedError', 'RefusedGlobalError', 'allowed_globals', 'read_pickle']

PathLike = Union[str, os.PathLike]

_NUMPY_CORE = ('numpy.core.multiarray', 'numpy._core.multiarray', 'numpy.core._multiarray_umath',
               'numpy._core._multiarray_umath')
_DTYPES = frozenset({'float16', 'float32', 'float64', 'bfloat16', 'int8', 'int16', 'int32', 'int64', 'uint8', 'bool',
                     'complex64', 'complex128', 'half', 'float', 'double', 'long', 'int', 'short'})
_NDARRAY = object()  # stands for numpy.ndarray in a pickle; only _reconstruct accepts it
_PY2_MODULES = {'copy_reg': 'copyreg', '__builtin__': 'builtins'}  # names that pickle protocols 0-2 write


class LegacyPickleError(ValueError):
    """The file is not a readable StyleGAN-XL / StyleSAN-XL network pickle (the message says why and what to do)."""


class RefusedError(LegacyPickleError):
    """The pickle asked for something outside the allow-list; nothing from the file was run."""


class RefusedGlobalError(RefusedError):
    """The pickle names a global (function, class, module) that is not on the allow-list."""

    def __init__(self, module: str, name: str, path: str) -> None:
        self.module, self.name, self.path = module, name, path
        super().__init__(
            f'{path}: refused for safety: the pickle names the global {module}.{name}, which is not on the allow-list '
            'of StyleGAN-XL / StyleSAN-XL classes (san_ext/legacy/allowlist.py). Nothing from the file was run or '
            f'imported. If this is a genuine upstream pickle with a class we do not know, pass '
            f"extra_classes=[('{module}', '{name}')] to read it as an inert record.")


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _short(value: Any) -> str:
    """``repr`` for messages, bounded in depth and length: a pickle can nest shared references so that the full
    repr of a 100-byte object would take 2**60 characters."""
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 (any repr may fail on an object a pickle half-built)
        return f'<{type(value).__name__}>'


def _check_ints(values: Any, what: str) -> tuple:
    if not isinstance(values, (tuple, list, torch.Size)) or not all(isinstance(v, int) and v >= 0 for v in values):
        raise LegacyPickleError(f'bad tensor {what} in the pickle: {_short(values)}')
    return tuple(values)


# ---------------------------------------------------------------------------------------------------------------
# Checked data constructors.

def _load_from_bytes(data: Any) -> torch.storage.TypedStorage:
    """A storage serialised by ``torch.save`` inside the pickle, decoded with the weights-only loader on the CPU."""
    if not isinstance(data, (bytes, bytearray)):
        raise LegacyPickleError(f'a tensor storage should be bytes, got {type(data).__name__}')
    with warnings.catch_warnings():  # TypedStorage deprecation, and torch's notes on odd protocols in crafted bytes
        warnings.simplefilter('ignore')
        storage = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise LegacyPickleError(f'a tensor storage decoded to {type(storage).__name__}, expected a typed storage')
    return storage


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` without hooks: a view of ``storage``, bounds checked first."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise LegacyPickleError(f'a tensor should be built on a typed storage, got {type(storage).__name__}')
    size, stride = _check_ints(size, 'size'), _check_ints(stride, 'stride')
    if not isinstance(offset, int) or offset < 0 or len(size) != len(stride):
        raise LegacyPickleError(f'bad tensor layout in the pickle: offset {_short(offset)}, size {size}, '
                                f'stride {stride}')
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*TypedStorage is deprecated.*')
        numel, dtype, untyped = storage.size(), storage.dtype, storage.untyped()
    if all(size) and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= numel:
        raise LegacyPickleError(f'a tensor of size {size} at offset {offset} overruns its storage of {numel} '
                                'elements; the file is corrupt')
    return torch.empty(0, dtype=dtype).set_(untyped, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None,
                       state: Any = None) -> torch.nn.Parameter:
    """``torch._utils._rebuild_parameter[_with_state]`` without hooks or extra state."""
    if not isinstance(data, torch.Tensor):
        raise LegacyPickleError(f'a parameter should wrap a tensor, got {type(data).__name__}')
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad) and data.is_floating_point())


def _latin1(text: Any, encoding: Any = 'latin1') -> bytes:
    """``_codecs.encode(text, 'latin1')``: how pickle protocols 0-2 write ``bytes``."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise LegacyPickleError('_codecs.encode is allowed for latin1 text only (pickled bytes), not '
                                f'{_short(encoding)}')
    return text.encode('latin1')


def _device(*args: Any) -> torch.device:
    if not 1 <= len(args) <= 2 or not all(isinstance(a, (str, int)) for a in args):
        raise LegacyPickleError(f'bad torch.device arguments in the pickle: {_short(args)}')
    return torch.device(*args)


def _np_dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype('f8', False, True)`` as numpy pickles it: the type code must be a string. Always a copy (as
    numpy's own pickles ask), so that the BUILD that follows never reaches numpy's shared built-in dtypes."""
    if not isinstance(obj, str):
        raise LegacyPickleError(f'a numpy dtype should be named by a string, got {type(obj).__name__}')
    return np.dtype(obj, align=bool(align), copy=True)


def _check_dtype_flags(dtype: np.dtype, path: str) -> None:
    """A dtype's state carries numpy's internal flags; a pickle that sets others than numpy derives for the dtype
    (say "holds object pointers" on int64) makes arrays that fail in numpy's copy and free loops."""
    if dtype.names:
        canonical = np.dtype(dtype.descr, align=dtype.isalignedstruct)
    else:
        canonical = np.dtype((dtype.base, dtype.shape)) if dtype.subdtype else np.dtype(dtype.str)
    if dtype.flags != canonical.flags:
        raise LegacyPickleError(f'{path}: a numpy dtype {dtype} with flags {dtype.flags} (numpy derives '
                                f'{canonical.flags} for it); the file is corrupt or crafted')


def _np_reconstruct(subtype: Any, shape: Any = (0,), dtype: Any = b'b') -> np.ndarray:
    """An empty ndarray that pickle's BUILD then fills from its state (numpy's own ``__setstate__``)."""
    if subtype is not _NDARRAY:
        raise LegacyPickleError(f'numpy _reconstruct may only build numpy.ndarray, got {_short(subtype)}')
    return np.empty((0,), dtype=np.uint8)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy scalar from its dtype and raw bytes (object scalars are the already unpickled object)."""
    if not isinstance(dtype, np.dtype):
        raise LegacyPickleError(f'a numpy scalar needs a dtype, got {type(dtype).__name__}')
    if dtype.hasobject:
        return data
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise LegacyPickleError(f'a numpy {dtype} scalar needs {dtype.itemsize} bytes')
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


class _Unpickler(pickle._Unpickler):
    """The pure-Python unpickler with a ``find_class`` that only hands out allow-listed stand-ins and checked
    constructors, and checked ``BUILD``, ``NEWOBJ`` and ``BYTEARRAY8`` (see the module docstring)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: str, extra_classes: Iterable[tuple[str, str]] = (), size: int = 0) -> None:
        super().__init__(file)
        self._path = path
        self._size = size  # bytes in the file: no counted read can ask for more
        self._extra = {tuple(e) for e in extra_classes}
        self._classes: dict[tuple[str, str], type] = {}
        self._easydict = type('EasyDict', (dict,), {'__module__': __name__, '__qualname__': 'Record[EasyDict]',
                                                    '__slots__': ()})
        self._table = self._constructors()

    def _constructors(self) -> dict[tuple[str, str], Any]:
        table: dict[tuple[str, str], Any] = {
            ('collections', 'OrderedDict'): collections.OrderedDict,
            ('torch', 'Size'): torch.Size,
            ('torch', 'device'): _device,
            ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
            ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
            ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
            ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
            ('torch.storage', '_load_from_bytes'): _load_from_bytes,
            ('numpy', 'ndarray'): _NDARRAY,
            ('numpy', 'dtype'): _np_dtype,
            ('torch_utils.persistence', '_reconstruct_persistent_obj'): self._persistent,
            ('dnnlib.util', 'EasyDict'): self._easydict,
            ('dnnlib', 'EasyDict'): self._easydict,
            ('copyreg', '_reconstructor'): self._reconstructor,
            ('copyreg', '__newobj__'): self._newobj,
            ('builtins', 'object'): object,
            ('builtins', 'dict'): dict,
            ('builtins', 'set'): set,
            ('builtins', 'frozenset'): frozenset,
            ('builtins', 'slice'): slice,
            ('builtins', 'complex'): complex,
            ('_codecs', 'encode'): _latin1,
            ('builtins', 'getattr'): self._getattr,
            ('builtins', 'setattr'): _setattr,
            ('dill', '_dill'): ModuleRef('dill._dill'),
        }
        for module in _NUMPY_CORE:
            table[(module, '_reconstruct')] = _np_reconstruct
            table[(module, 'scalar')] = _np_scalar
        for name in _DTYPES:
            table[('torch', name)] = getattr(torch, name)
        return table

    # -- resolving names ----------------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        return self.resolve(module, name)

    def resolve(self, module: str, name: str) -> Any:
        """The stand-in for ``module.name``, or :class:`RefusedGlobalError`."""
        module = _PY2_MODULES.get(module, module)
        key = (module, name)
        if key in self._table:
            return self._table[key]
        if module in ('dill._dill', 'dill._shims') and name in DILL_HELPERS:
            return self._dill_helper(name)
        if name == '__dict__' and module in MODULE_DICTS:
            return ModuleRef(module)
        if (name in MODULE_CLASSES.get(module, ()) or name in TORCH_NN_EXTRA.get(module, ())
                or is_torch_nn_class(module, name) or key in self._extra):
            if key not in self._classes:
                self._classes[key] = record_class(module, name)
            return self._classes[key]
        if name in FUNCTION_REFS.get(module, ()):
            ref = FunctionRef()
            ref._module, ref._name = module, name
            return ref
        raise RefusedGlobalError(module, name, self._path)

    # -- opcodes whose stock versions would act on anything --------------------------------------------------------
    def _load_build(self) -> None:
        """BUILD (set the state of the object below) for records, numpy arrays and dtypes (numpy's own
        ``__setstate__``, as numpy pickles them) and, with a dict state, EasyDict items and OrderedDict attributes.
        Anything else (a tensor, a storage, a function, a class) is refused: a pickle sets attributes only on what
        it describes."""
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, Record) or type(inst) is np.ndarray:
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            inst.__setstate__(state)
            _check_dtype_flags(inst, self._path)
        elif type(inst) in (self._easydict, collections.OrderedDict) and isinstance(state, dict) \
                and all(isinstance(k, str) for k in state):
            (inst if type(inst) is self._easydict else vars(inst)).update(state)
        else:
            raise RefusedError(f'{self._path}: refused for safety: the pickle sets the state (BUILD) of a '
                               f'{type(inst).__name__} object; only recorded objects, numpy arrays and dtypes take '
                               'state from a pickle')

    def _load_newobj(self) -> None:
        """NEWOBJ: ``cls.__new__(cls, *args)`` for the classes ``copyreg.__newobj__`` allows."""
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(args, tuple):
            raise LegacyPickleError(f'{self._path}: NEWOBJ arguments must be a tuple, got {type(args).__name__}')
        self.append(self._newobj(cls, *args))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        if not isinstance(kwargs, dict) or kwargs:
            raise LegacyPickleError(f'{self._path}: NEWOBJ_EX with keyword arguments {_short(kwargs)}; upstream '
                                    'pickles pass none')
        self._load_newobj()

    def _load_bytearray8(self) -> None:
        """BYTEARRAY8 without the stock zero-filled ``bytearray(n)`` of a length read from the file."""
        (n,) = struct.unpack('<Q', self.read(8))
        data = self.read(n) if n <= self._size else b''
        if len(data) != n:
            raise LegacyPickleError(f'{self._path}: a {n}-byte array runs past the end of the file (truncated?)')
        self.append(bytearray(data))

    def _filled(self, at: int, kinds: tuple, op: str) -> Any:
        """The container that APPEND(S) / SETITEM(S) / ADDITEMS fill; the stock ops call ``extend``, ``append``,
        ``add`` or ``__setitem__`` on whatever is on the stack (a tensor, an array), these only fill containers."""
        obj = self.stack[at]
        if type(obj) not in kinds:
            raise RefusedError(f'{self._path}: refused for safety: {op} on a {type(obj).__name__} object; a pickle '
                               'fills only the lists, dicts and sets it made')
        return obj

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._filled(-1, (list,), 'APPEND').append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        self._filled(-1, (list,), 'APPENDS').extend(items)

    def _load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._filled(-1, (dict, collections.OrderedDict, self._easydict), 'SETITEM')[key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._filled(-1, (dict, collections.OrderedDict, self._easydict), 'SETITEMS')
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _load_additems(self) -> None:
        items = self.pop_mark()
        self._filled(-1, (set,), 'ADDITEMS').update(items)

    def _refuse_extension(self) -> None:
        raise RefusedError(f'{self._path}: refused for safety: the pickle uses an extension code (EXT1/2/4, names '
                           "looked up in copyreg's process-wide registry); upstream pickles use none")

    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    dispatch[pickle.APPEND[0]], dispatch[pickle.APPENDS[0]] = _load_append, _load_appends
    dispatch[pickle.SETITEM[0]], dispatch[pickle.SETITEMS[0]] = _load_setitem, _load_setitems
    dispatch[pickle.ADDITEMS[0]] = _load_additems
    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = _refuse_extension
    del _op

    # -- persistence, copyreg, getattr ----------------------------------------------------------------------------
    def _persistent(self, meta: Any) -> PersistentRecord:
        """``torch_utils.persistence._reconstruct_persistent_obj``: record the class and state; never run the
        embedded module source."""
        if not isinstance(meta, dict) or not {'type', 'class_name', 'state', 'module_src'} <= set(meta):
            raise LegacyPickleError(f'{self._path}: a persistent-class record lacks its meta fields')
        class_name, src = meta['class_name'], meta['module_src']
        if meta['type'] != 'class' or not isinstance(class_name, str) or not isinstance(src, str):
            raise LegacyPickleError(f'{self._path}: malformed persistent-class record {_short(class_name)}')
        if class_name not in PERSISTENT_CLASSES and ('persistent', class_name) not in self._extra:
            raise RefusedError(
                f'{self._path}: refused for safety: the pickle holds a persistent object of class {class_name!r} '
                '(with its module source code embedded), which is not a known StyleGAN-XL class. The embedded '
                "source was not run. Pass extra_classes=[('persistent', " f"'{class_name}')] to read it inertly.")
        return PersistentRecord(class_name, meta['state'], meta.get('version'), src, _module_hint(src))

    def _reconstructor(self, cls: Any, base: Any, state: Any = None) -> Any:
        """``copyreg._reconstructor`` (pickle protocols 0 and 1), for allow-listed record classes only."""
        if not (isinstance(cls, type) and (issubclass(cls, Record) or cls is self._easydict)) \
                or base not in (object, dict):
            raise RefusedError(f'{self._path}: refused for safety: copyreg._reconstructor({_short(cls)}, '
                               f'{_short(base)}) builds something other than an allow-listed class')
        obj = cls.__new__(cls)
        if base is dict and isinstance(state, dict) and isinstance(obj, dict):
            obj.update(state)
        return obj

    def _newobj(self, cls: Any, *args: Any) -> Any:
        if not (isinstance(cls, type) and (issubclass(cls, Record) or cls in (self._easydict,
                                                                              collections.OrderedDict))):
            raise RefusedError(f'{self._path}: refused for safety: copyreg.__newobj__ on {_short(cls)}')
        return cls.__new__(cls, *args)

    def _getattr(self, obj: Any, name: Any, *default: Any) -> Any:
        """dill's ``getattr(module, name)`` goes through the allow-list; on a record it stays a description."""
        if not isinstance(name, str):
            raise LegacyPickleError(f'{self._path}: getattr with a non-string name {_short(name)}')
        if isinstance(obj, ModuleRef):
            return self.resolve(obj._module, name)
        if isinstance(obj, Record):
            return AttrRecord(obj, name)
        raise RefusedError(f'{self._path}: refused for safety: the pickle reads attribute {name!r} of a '
                           f'{type(obj).__name__} object')

    def _dill_helper(self, name: str) -> Callable:
        """dill's private helpers: module and attribute look-ups through the allow-list, numpy arrays for real,
        code objects, cells, closures and types as inert records."""
        if name == '_import_module':
            return lambda import_name, safe=False: ModuleRef(str(import_name))
        if name == '_get_attr':
            return self._getattr
        if name == '_setattr':
            return _setattr
        if name == '_create_array':
            return self._create_array
        if name == '_load_type':
            return lambda type_name: (lambda *args: CallRecord(f'types.{type_name}', *args))
        return lambda *args: CallRecord(f'dill.{name}', *args)

    def _create_array(self, f: Any, args: Any, state: Any, npdict: Any = None) -> np.ndarray:
        if f is not _np_reconstruct or not isinstance(args, tuple) or not isinstance(state, tuple):
            raise RefusedError(f'{self._path}: refused for safety: dill _create_array with {_short(f)}')
        array = _np_reconstruct(*args)
        array.__setstate__(state)
        return array


def _setattr(obj: Any, name: Any, value: Any) -> None:
    """dill's post-processing ``setattr``: kept on the records of rebuilt functions and cells, ignored on other
    records, refused on anything else."""
    if not isinstance(obj, Record) or not isinstance(name, str):
        raise RefusedError(f'refused for safety: the pickle sets attribute {_short(name)} of a {type(obj).__name__} '
                           'object; only recorded objects take attributes from a pickle')
    if isinstance(obj, CallRecord):
        obj.attrs[name] = value


def _module_hint(src: str) -> str:
    """Which upstream file an embedded module source looks like (for messages; the source is never run)."""
    if 'class SuperresGenerator' in src:
        return 'training.networks_stylegan3_resetting'
    if 'class SynthesisBlock' in src:
        return 'training.networks_stylegan2'
    if 'filtered_lrelu' in src and 'class SynthesisLayer' in src:
        return 'training.networks_stylegan3'
    if 'class AugmentPipe' in src:
        return 'training.augment'
    return 'unknown_module'


def allowed_globals() -> frozenset[tuple[str, str]]:
    """Every ``(module, name)`` the reader resolves without ``extra_classes``, besides the public ``torch.nn`` module
    classes under ``torch.nn.modules.*`` (:func:`~san_ext.legacy.allowlist.is_torch_nn_class`) and the Python 2 module
    aliases ``copy_reg`` and ``__builtin__``: the constructor table, dill's helpers, module namespaces, the module
    classes and the function references of :mod:`san_ext.legacy.allowlist`."""
    table = _Unpickler(io.BytesIO(), '<allow-list>')._table
    out = set(table)
    out |= {(m, n) for m in ('dill._dill', 'dill._shims') for n in DILL_HELPERS}
    out |= {(m, '__dict__') for m in MODULE_DICTS}
    for mapping in (MODULE_CLASSES, TORCH_NN_EXTRA, FUNCTION_REFS):
        out |= {(m, n) for m, names in mapping.items() for n in names}
    return frozenset(out)


def read_pickle(path: PathLike, extra_classes: Iterable[tuple[str, str]] = ()) -> Any:
    """Unpickle ``path`` with the restricted unpickler: the data with inert records for the modules.

    Raises :class:`RefusedError` (with the global or class named) for anything outside the allow-list, and
    :class:`LegacyPickleError` for files that are not network pickles: every error comes out as one of the two.
    """
    path = os.fspath(path)
    try:
        f = open(path, 'rb')
    except OSError as e:
        raise LegacyPickleError(f'cannot open {path!r} ({e.strerror}); pass the path of a StyleGAN-XL .pkl') from e
    with f:
        size = os.fstat(f.fileno()).st_size
        if f.read(4).startswith(b'PK\x03\x04'):
            raise LegacyPickleError(f'{path} is a zip archive (torch.save format), not a StyleGAN-XL network pickle; '
                                    'san_ext.legacy reads the .pkl files that StyleGAN-XL and StyleSAN-XL release')
        f.seek(0)
        try:
            return _Unpickler(f, path, extra_classes, size).load()
        except LegacyPickleError as e:
            if path in str(e):
                raise
            raise type(e)(f'{path}: {e}') from None
        except RefusedCallError as e:
            raise RefusedError(f'{path}: {e}') from None
        except Exception as e:  # noqa: BLE001 (whatever a malformed file makes the unpickler or numpy/torch raise)
            raise LegacyPickleError(f'{path} is not a readable StyleGAN-XL / StyleSAN-XL network pickle '
                                    f'({type(e).__name__}: {str(e)[:300]})') from e
