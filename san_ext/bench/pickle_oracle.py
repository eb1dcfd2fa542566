"""The oracle of the pickle-reader fuzz (inputs: :mod:`san_ext.bench.pickle_fuzz`): reads each input from a file
with :func:`san_ext.legacy.read_pickle` and judges the outcome.

Accepted: ``loaded`` (every reachable object is data or one of the reader's inert records, and its tensors hold no
more bytes than the file), ``refused`` (:class:`~san_ext.legacy.RefusedError`) and ``rejected`` (another
:class:`~san_ext.legacy.LegacyPickleError`). Failures: ``escaped`` (any other exception), ``ran_code`` (a Python
audit event during the read: exec, compile, import, a process, a socket, a file other than the input), ``sentinel``
(the sentinel file appeared), ``not_inert`` (the result holds an object the reader does not make) and ``polluted``
(the reader's own functions gained attributes).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import random
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from san_ext.legacy import LegacyPickleError, RefusedError, read_pickle
from san_ext.legacy import unpickler as _reader
from san_ext.legacy.records import Record

from .pickle_fuzz import DANGEROUS, SENTINEL_MODULE, Grammar, mutate, op_spans, program, storage_bytes

__all__ = ['FAILURES', 'OUTCOMES', 'FuzzResult', 'Fuzzer', 'audit_events', 'inert_violation']

OUTCOMES = ('loaded', 'refused', 'rejected')
FAILURES = ('escaped', 'ran_code', 'sentinel', 'not_inert', 'polluted')
_EXACT_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, object)
_READER_TYPES = (object, dict, set, frozenset, slice, complex, collections.OrderedDict, torch.Size)
_HARMLESS = ('builtins.id',)  # audit events of the reader's own work
# Parts of torch that torch imports on first use, on some error paths of torch.load and tensor building only: imported
# up front, so that every import during a read is one the input caused.
_LAZY_IMPORTS = ('torch.utils.serialization.config', 'torch._subclasses.schema_check_mode')
_LIBRARY_DIRS = tuple({sysconfig.get_path(k) for k in ('stdlib', 'platstdlib', 'purelib', 'platlib')})
_BLOCKED = ('os.system', 'os.exec', 'os.posix_spawn', 'os.spawn', 'os.fork', 'os.kill', 'subprocess.Popen',
            'os.remove', 'os.rmdir', 'os.rename', 'shutil.rmtree', 'socket.connect', 'ctypes.dlopen', 'open')


class _AuditGate:
    """A process-wide audit hook (added once, never removable) that records events only while a read is watched, and
    blocks the harmful ones (processes, deletions, sockets, files other than the input) after recording them."""

    _installed: Optional[_AuditGate] = None

    def __init__(self) -> None:
        self.allowed_path: Optional[str] = None
        self.events: list[str] = []

    @classmethod
    def get(cls) -> _AuditGate:
        if cls._installed is None:
            for module in _LAZY_IMPORTS:  # so that only imports caused by the input are seen
                try:
                    importlib.import_module(module)
                except ImportError:  # another torch version: nothing to import ahead there
                    pass
            cls._installed = cls()
            sys.addaudithook(cls._installed._hook)
        return cls._installed

    def _hook(self, event: str, args: tuple) -> None:
        if self.allowed_path is None or event in _HARMLESS:
            return
        if event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)) and args[1] in (None, 'r', 'rb'):
            path = os.fsdecode(args[0])
            if path == self.allowed_path or path.startswith(_LIBRARY_DIRS):
                return
        self.events.append(f'{event}{_short_args(args)}')
        if event.startswith(_BLOCKED):
            raise RuntimeError(f'fuzz oracle blocked audit event {event}')


@contextlib.contextmanager
def audit_events(input_path: str | os.PathLike) -> Iterator[list[str]]:
    """The Python audit events raised inside the block, other than reading ``input_path`` (and the harmful ones are
    blocked: processes, deletions, sockets, opening any other file but the library's own sources)."""
    gate = _AuditGate.get()
    gate.events = []
    gate.allowed_path = os.fspath(input_path)
    try:
        yield gate.events
    finally:
        gate.allowed_path = None


def _short_args(args: tuple) -> str:
    try:
        return repr(args)[:120]
    except Exception:  # a repr may fail on half-built objects
        return '(...)'


def _reader_callables() -> list:
    """The reader's own functions (module level and methods): a read must leave their attributes untouched."""
    funcs = [v for v in vars(_reader).values() if callable(v) and getattr(v, '__module__', '') == _reader.__name__
             and hasattr(v, '__dict__') and not isinstance(v, type)]
    funcs += [v for v in vars(_reader._Unpickler).values() if hasattr(v, '__code__')]
    return funcs


def _is_reader_callable(obj: Any) -> bool:
    func = getattr(obj, '__func__', obj)
    if isinstance(getattr(obj, '__self__', None), _reader._Unpickler):
        return getattr(func, '__module__', None) == _reader.__name__
    return type(obj).__name__ == 'function' and obj.__module__ == _reader.__name__


def _children(x: Any) -> Optional[list]:
    """What to look inside ``x``, or None when ``x`` is nothing the reader makes."""
    t = type(x)
    if t in _EXACT_TYPES or isinstance(x, (np.generic, np.dtype)) or x is _reader._NDARRAY \
            or t in (torch.storage.TypedStorage, torch.UntypedStorage):
        return []
    if t in (list, tuple, set, frozenset, torch.Size):
        return list(x)
    if isinstance(x, dict) and (t in (dict, collections.OrderedDict) or t.__module__ == _reader.__name__):
        return [*x.keys(), *x.values(), *getattr(x, '__dict__', {}).values()]
    if t is slice:
        return [x.start, x.stop, x.step]
    if t in (torch.Tensor, torch.nn.Parameter):
        return None if x._backward_hooks or x.grad_fn is not None else []
    if t is np.ndarray:
        return x.ravel().tolist() if x.dtype.hasobject else []
    if isinstance(x, Record):
        return list(vars(x).values())
    if isinstance(x, type):
        return [] if issubclass(x, Record) or x in _READER_TYPES or x.__module__ == _reader.__name__ else None
    return [] if _is_reader_callable(x) else None


def inert_violation(obj: Any, max_bytes: Optional[int] = None) -> Optional[str]:
    """None when everything reachable from ``obj`` is data or made by the reader (records, record classes, its
    checked constructors) and, given ``max_bytes`` (the input's size), its tensors hold no more bytes than came in;
    else a description of the first object that breaks the rule."""
    seen: set[int] = set()
    storages: dict[int, int] = {}
    stack = [obj]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            storages[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        if max_bytes is not None and sum(storages.values()) > max_bytes:
            return f'tensors of {sum(storages.values())} bytes from a {max_bytes}-byte input'
        inside = _children(x)
        if inside is None:
            what = f'the class {x.__module__}.{x.__qualname__}' if isinstance(x, type) else \
                f'a {type(x).__module__}.{type(x).__qualname__} object'
            return f'{what} (hooks or a graph)' if isinstance(x, torch.Tensor) else what
        stack.extend(inside)
    return None


@dataclass
class FuzzResult:
    """Outcome counts per input source, the failures found (with the input as hex), and the wall time."""

    counts: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.counts.values())

    def to_dict(self) -> dict:
        return {'n': self.n, 'seconds': self.seconds, 'counts': {k: dict(v) for k, v in self.counts.items()},
                'failures': self.failures[:50]}


class Fuzzer:
    """Reads fuzzed inputs through :func:`~san_ext.legacy.read_pickle` under the oracle (see the module docstring).

    ``seeds``: valid pickles to mutate; ``names``: the allowed globals that random programs call; ``workdir``: where
    the input file, the sentinel module and the sentinel file live.
    """

    def __init__(self, seeds: Sequence[bytes], names: Sequence[tuple[str, str]], workdir: Path, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.input = self.workdir / 'input.pkl'
        self.sentinel = self.workdir / 'SENTINEL'
        (self.workdir / f'{SENTINEL_MODULE}.py').write_text(f'open({str(self.sentinel)!r}, "w").close()\nrun = print\n')
        payloads = [f'touch {self.sentinel}', f'open({str(self.sentinel)!r}, "w").close()', SENTINEL_MODULE,
                    str(self.sentinel), 'os', 'builtins', 'subprocess', 'feature_networks.vit', 'torch.nn.modules.conv']
        self.gen = Grammar(self.rng, list(names), payloads, storage_bytes())
        self.seeds = [(s, op_spans(s)) for s in seeds]
        self._programs = 0
        self.watched = _reader_callables()
        # attributes the reader's functions carry before any read (a wrapper's __wrapped__, mutmut's trampoline)
        self.baseline = {f: set(getattr(f, '__dict__', {})) for f in self.watched}

    def inputs(self, n: int, mutated_share: float = 0.5) -> Iterator[tuple[str, bytes]]:
        """``n`` (source, bytes) pairs: mutated seeds with probability ``mutated_share``, else random programs."""
        for _ in range(n):
            if self.seeds and self.rng.random() < mutated_share:
                data, spans = self.rng.choice(self.seeds)
                yield 'mutated', mutate(data, spans, self.rng, self.gen)
            else:  # every third program probes the next dangerous global in turn
                self._programs += 1
                probe = DANGEROUS[self._programs // 3 % len(DANGEROUS)] if self._programs % 3 == 0 else None
                yield 'program', program(self.rng, self.gen.names, self.gen.payloads, self.gen.storage, probe)

    def check(self, data: bytes) -> tuple[str, str]:
        """(outcome, detail) of reading ``data`` from a file."""
        self.input.write_bytes(data)
        outcome, detail, result = 'loaded', '', None
        with audit_events(self.input) as events:
            try:
                result = read_pickle(self.input)
            except RefusedError as e:
                outcome, detail = 'refused', str(e)[:200]
            except LegacyPickleError as e:
                outcome, detail = 'rejected', str(e)[:200]
            except Exception as e:  # noqa: BLE001 (the point: anything else is a failure)
                outcome, detail = 'escaped', f'{type(e).__name__}: {str(e)[:200]}'
        if events:
            return 'ran_code', '; '.join(events[:3])
        if self.sentinel.exists():
            self.sentinel.unlink()
            return 'sentinel', 'the sentinel file appeared'
        if outcome == 'loaded' and (why := inert_violation(result, len(data))):
            return 'not_inert', why
        added = {f: set(getattr(f, '__dict__', {})) - self.baseline[f] for f in self.watched}
        if polluted := [f.__qualname__ for f, keys in added.items() if keys]:
            for f, keys in added.items():
                for key in keys:
                    delattr(f, key)
            return 'polluted', f'attributes set on {polluted[:3]}'
        return outcome, detail

    def run(self, n: int, mutated_share: float = 0.5, keep: int = 50) -> FuzzResult:
        """Check ``n`` inputs; keeps the first ``keep`` failures with their bytes (hex)."""
        result = FuzzResult()
        sys.path.insert(0, str(self.workdir))
        start = time.perf_counter()
        try:
            for data, _ in self.seeds:  # warm-up: lazy imports of numpy and torch happen outside the watch
                self._unwatched(data)
            for source, data in self.inputs(n, mutated_share):
                outcome, detail = self.check(data)
                result.counts[source][outcome] += 1
                if outcome in FAILURES and len(result.failures) < keep:
                    result.failures.append({'source': source, 'outcome': outcome, 'detail': detail,
                                            'input_hex': data.hex()})
        finally:
            sys.path.remove(str(self.workdir))
        result.seconds = time.perf_counter() - start
        return result

    def _unwatched(self, data: bytes) -> None:
        self.input.write_bytes(data)
        try:
            read_pickle(self.input)
        except LegacyPickleError:
            pass
