"""Payloads for tests/test_legacy_safety.py: calls of dangerous globals, each with the trace it would leave if it ran
(a file created, a canary deleted, an audit event), written as opcodes in three styles (GLOBAL, STACK_GLOBAL, INST).
"""

from __future__ import annotations

import marshal
import os
import pickle
import pickletools
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from san_ext.bench.pickle_fuzz import op_bytes, op_call, op_global, op_int, op_str, op_tuple


def refused_message(path: Path, data: bytes, error: type) -> str:
    """The message ``read_pickle`` raises for ``data`` written to ``path``, checking that it is exactly ``error``."""
    from san_ext.legacy import read_pickle
    path.write_bytes(data)
    with pytest.raises(error) as err:
        read_pickle(path)
    assert type(err.value) is error
    return str(err.value)


def write(tmp_path: Path, data: bytes, name: str = 'payload.pkl') -> Path:
    """``data`` written to ``tmp_path/name``; returns the path."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


@dataclass
class Env:
    """What payloads act on: ``target`` (a file they would create), ``canary`` / ``canary_dir`` (what they would
    delete or move), ``module`` (a module whose import creates ``target``), ``script``, ``npy``, ``inner``."""

    target: Path
    canary: Path
    canary_dir: Path
    module: str
    script: Path
    npy: Path
    inner: bytes

    @property
    def code(self) -> str:
        return f'open({str(self.target)!r}, "w").close()'


class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def make_env(tmp_path: Path) -> Env:
    """Payload targets in ``tmp_path``; the caller puts ``tmp_path`` on ``sys.path`` for the sentinel module."""
    module = f'sentinel_{uuid.uuid4().hex}'  # unique: a control's import must not leave it cached for the next test
    target = tmp_path / 'PWNED'
    (tmp_path / f'{module}.py').write_text(f'open({str(target)!r}, "w").close()\ndef run(*args): pass\n')
    (tmp_path / 'canary').write_text('x')
    (tmp_path / 'canary_dir').mkdir()
    np.save(tmp_path / 'obj.npy', np.array([_Reduce(os.system, f'touch {target}')], dtype=object), allow_pickle=True)
    return Env(target, tmp_path / 'canary', tmp_path / 'canary_dir', module, tmp_path / f'{module}.py',
               tmp_path / 'obj.npy', pickle.dumps(_Reduce(os.system, f'touch {target}')))


def op_list(items) -> bytes:
    return b'](' + b''.join(items) + b'e'


s, G = op_str, op_global
_IMPORT_OS = op_call(G('importlib', 'import_module'), [s('os')])


@dataclass(frozen=True)
class Case:
    """``module.name(*args(env))``, its result called again with each of ``then(env)``; ``sentinel``: 'file' (creates
    env.target), 'gone' (removes the canary), 'event:NAME' (raises that audit event) or None; ``control``: the payload
    is harmless to run under the standard unpickler, to show that the sentinel fires."""

    module: str
    name: str
    args: Callable[[Env], list] = lambda e: []
    then: Callable[[Env], list] = lambda e: []
    sentinel: Optional[str] = None
    control: bool = False
    finish: Callable = lambda result: None

    def payload(self, e: Env, style: str) -> bytes:
        args = self.args(e)
        if style == 'GLOBAL':
            out = op_call(G(self.module, self.name), args)
        elif style == 'STACK_GLOBAL':
            out = b'\x80\x04' + op_call(s(self.module) + s(self.name) + b'\x93', args)
        else:
            out = b'(' + b''.join(args) + f'i{self.module}\n{self.name}\n'.encode()
        for more in self.then(e):
            out = op_call(out, more)
        return out + b'.'


F, GONE = 'file', 'gone'
CASES = [
    Case('builtins', 'eval', lambda e: [s(e.code)], sentinel=F, control=True),
    Case('builtins', 'exec', lambda e: [s(e.code)], sentinel=F, control=True),
    Case('__builtin__', 'eval', lambda e: [s(e.code)], sentinel=F, control=True),
    Case('builtins', 'compile', lambda e: [s(e.code), s('<p>'), s('exec')], sentinel='event:compile', control=True),
    Case('builtins', '__import__', lambda e: [s(e.module)], sentinel=F, control=True),
    Case('importlib', 'import_module', lambda e: [s(e.module)], sentinel=F, control=True),
    Case('runpy', 'run_module', lambda e: [s(e.module)], sentinel=F, control=True),
    Case('runpy', 'run_path', lambda e: [s(str(e.script))], sentinel=F, control=True),
    Case('builtins', 'open', lambda e: [s(str(e.target)), s('w')], sentinel=F, control=True),
    Case('io', 'open', lambda e: [s(str(e.target)), s('w')], sentinel=F, control=True),
    Case('codecs', 'open', lambda e: [s(str(e.target)), s('w')], sentinel=F, control=True),
    Case('os', 'system', lambda e: [s(f'touch {e.target}')], sentinel=F, control=True),
    Case('posix', 'system', lambda e: [s(f'touch {e.target}')], sentinel=F, control=True),
    Case('os', 'popen', lambda e: [s(f'touch {e.target}')], sentinel=F, control=True, finish=lambda r: r.close()),
    Case('subprocess', 'Popen', lambda e: [op_list([s('touch'), s(str(e.target))])], sentinel=F, control=True,
         finish=lambda r: r.wait()),
    Case('subprocess', 'run', lambda e: [op_list([s('touch'), s(str(e.target))])], sentinel=F, control=True),
    Case('subprocess', 'check_output', lambda e: [op_list([s('touch'), s(str(e.target))])], sentinel=F,
         control=True),
    Case('subprocess', 'getoutput', lambda e: [s(f'touch {e.target}')], sentinel=F, control=True),
    Case('os', 'mkdir', lambda e: [s(str(e.target))], sentinel=F, control=True),
    Case('shutil', 'copy', lambda e: [s(str(e.script)), s(str(e.target))], sentinel=F, control=True),
    Case('os', 'remove', lambda e: [s(str(e.canary))], sentinel=GONE, control=True),
    Case('os', 'rename', lambda e: [s(str(e.canary)), s(f'{e.canary}.moved')], sentinel=GONE, control=True),
    Case('shutil', 'move', lambda e: [s(str(e.canary)), s(f'{e.canary}.moved')], sentinel=GONE, control=True),
    Case('shutil', 'rmtree', lambda e: [s(str(e.canary_dir))], sentinel=GONE, control=True),
    Case('pickle', 'loads', lambda e: [op_bytes(e.inner)], sentinel=F, control=True),
    Case('_pickle', 'loads', lambda e: [op_bytes(e.inner)], sentinel=F, control=True),
    Case('marshal', 'loads', lambda e: [op_bytes(marshal.dumps(compile(e.code, '<p>', 'exec')))],
         sentinel='event:marshal.loads', control=True),
    Case('functools', 'partial', lambda e: [G('os', 'system'), s(f'touch {e.target}')], lambda e: [[]], F, True),
    Case('functools', 'reduce', lambda e: [G('builtins', 'exec'), op_list([b'}']), s(e.code)], sentinel=F,
         control=True),
    Case('operator', 'methodcaller', lambda e: [s('system'), s(f'touch {e.target}')], lambda e: [[_IMPORT_OS]], F,
         True),
    Case('operator', 'attrgetter', lambda e: [s('system')], lambda e: [[_IMPORT_OS], [s(f'touch {e.target}')]], F,
         True),
    Case('timeit', 'timeit', lambda e: [s(e.code), s('pass'), G('time', 'perf_counter'), op_int(1)], sentinel=F,
         control=True),
    Case('cProfile', 'run', lambda e: [s(e.code)], sentinel=F, control=True),
    Case('numpy', 'load', lambda e: [s(str(e.npy)), b'N', b'\x88'], sentinel=F, control=True),
    Case('torch._utils', '_rebuild_from_type_v2', lambda e: [G('os', 'system'), G('builtins', 'object'),
                                                             op_tuple([s(f'touch {e.target}')]), b'N'], sentinel=F),
    Case('torch._tensor', '_rebuild_from_type_v2', lambda e: [G('os', 'system'), G('builtins', 'object'),
                                                              op_tuple([s(f'touch {e.target}')]), b'N'], sentinel=F,
         control=True),
    Case('socket', 'socket', sentinel='event:socket.__new__', control=True),
    Case('ctypes', 'CDLL', lambda e: [s('libc.so.6')], sentinel='event:ctypes.dlopen', control=True),
    Case('os', 'putenv', lambda e: [s('SAN_EXT_SENTINEL'), s('1')], sentinel='event:os.putenv', control=True),
    Case('__sentinel__', 'run', sentinel=F, control=True),  # naming a module imports it in the standard unpickler
    Case('builtins', 'type', lambda e: [s('X'), b')', b'}']),
    Case('builtins', 'globals'), Case('builtins', 'vars'), Case('builtins', 'breakpoint'), Case('builtins', 'input'),
    Case('builtins', 'delattr', lambda e: [G('os', 'path'), s('join')]), Case('builtins', '__build_class__'),
    Case('builtins', 'memoryview', lambda e: [op_bytes(b'x')]), Case('builtins', 'super'),
    Case('sys', 'exit', lambda e: [op_int(3)]), Case('os', '_exit', lambda e: [op_int(3)]), Case('os', 'fork'),
    Case('os', 'kill', lambda e: [op_int(os.getpid()), op_int(9)]),
    Case('os', 'execv', lambda e: [s('/bin/touch'), op_list([s('touch'), s(str(e.target))])], sentinel=F),
    Case('socket', 'create_connection', lambda e: [op_tuple([s('127.0.0.1'), op_int(9)])]),
    Case('torch', 'load', lambda e: [s(str(e.npy))]), Case('torch.serialization', 'load', lambda e: [s('x.pt')]),
    Case('torch.jit', 'load', lambda e: [s('x.pt')]), Case('torch.hub', 'load', lambda e: [s('a/b'), s('m')]),
    Case('dill._dill', '_eval_repr', lambda e: [s(e.code)], sentinel=F),
    Case('dill._dill', '_create_filehandle', lambda e: [s(str(e.target))]),
    Case('pdb', 'run', lambda e: [s(e.code)], sentinel=F), Case('code', 'interact'),
    Case('webbrowser', 'open', lambda e: [s('http://example.invalid')]),
    Case('copyreg', 'add_extension', lambda e: [s('os'), s('system'), op_int(240)]),
    Case('_codecs', 'decode', lambda e: [s('x'), s('rot13')]), Case('codecs', 'decode', lambda e: [s('x'), s('hex')]),
    Case('types', 'FunctionType', lambda e: [b'N', b'}']), Case('importlib.util', 'spec_from_file_location'),
    Case('numpy.lib.npyio', 'load', lambda e: [s(str(e.npy)), b'N', b'\x88'], sentinel=F),
    Case('san_ext.legacy.unpickler', '_Unpickler'), Case('builtins', 'getattr.__self__'),
    Case('collections', 'OrderedDict.__class__'), Case('dill._dill', '_load_type.__globals__'),
]
_DUMMY = Env(*(Path('/nonexistent'),) * 3, 'm', Path('/m.py'), Path('/o.npy'), b'')
# INST pushes its arguments before it names the class: cases whose arguments name globals of their own are refused
# for those first, so they run with the two styles that name the callable first.
STYLED = [(c, style) for c in CASES for style in ('GLOBAL', 'STACK_GLOBAL', 'INST')
          if style != 'INST' or not any(op.name == 'GLOBAL' for op, _, _ in
                                        pickletools.genops(op_tuple(c.args(_DUMMY)) + b'.'))]


def case_id(case: Case) -> str:
    return f'{case.module}.{case.name}'


def fired(case: Case, e: Env, events: list[str]) -> bool:
    if case.sentinel == F:
        return e.target.exists()
    if case.sentinel == GONE:
        return not (e.canary.exists() and e.canary_dir.exists())
    return bool(case.sentinel) and any(ev.startswith(case.sentinel[len('event:'):]) for ev in events)


def resolved(case: Case, e: Env) -> Case:
    return Case(e.module, case.name, sentinel=case.sentinel, control=True) if case.module == '__sentinel__' else case
