"""Inputs for fuzzing the restricted StyleGAN-XL pickle reader (:func:`san_ext.legacy.read_pickle`): an opcode
assembler, random opcode streams and op-level mutations of seed pickles. The oracle that judges each read is
:mod:`san_ext.bench.pickle_oracle`; the CLI ``python -m san_ext.bench.fuzz_unpickler``.

Mutations: a byte flipped, an op deleted, doubled or swapped, a truncation, a global renamed, a call spliced in, a
string or an int replaced, a BUILD added after an op. Random streams come from a small grammar: literals, containers,
memo references, and calls, ``NEWOBJ``, ``INST`` and ``BUILD`` on globals drawn from the allow-list and from a list of
dangerous ones, with payloads that would leave a trace (a sentinel file, an import of a sentinel module); every third
stream first calls the next dangerous global in turn, so that a hole in the allow-list shows within a few hundred.
"""

from __future__ import annotations

import io
import pickletools
import random
import struct
import warnings
from collections.abc import Sequence
from typing import Optional

import torch

__all__ = ['DANGEROUS', 'SENTINEL_MODULE', 'Grammar', 'frameless', 'mutate', 'op_bytes', 'op_call', 'op_dict',
           'op_global', 'op_int', 'op_spans', 'op_str', 'op_tuple', 'program', 'storage_bytes']

SENTINEL_MODULE = '_san_ext_fuzz_sentinel'  # a module in the work folder whose import writes the sentinel file

# Globals a malicious pickle reaches for: evaluation, compilation, imports, type building, files, processes,
# sockets, nested pickles, codecs, functools / operator chains, torch and numpy loaders, dill's evaluating helpers.
DANGEROUS = tuple(tuple(s.split(':')) for s in (
    'builtins:eval builtins:exec builtins:compile builtins:__import__ builtins:type builtins:open builtins:input '
    'builtins:breakpoint builtins:globals builtins:vars builtins:delattr builtins:__build_class__ builtins:print '
    'builtins:memoryview builtins:classmethod builtins:super __builtin__:eval os:system posix:system os:popen '
    'os:execv os:remove os:unlink os:rmdir os:mkdir os:rename os:fork os:kill os:environ os:putenv os:_exit '
    'subprocess:Popen subprocess:run subprocess:call subprocess:check_output subprocess:getoutput '
    'importlib:import_module importlib.util:spec_from_file_location runpy:run_path runpy:run_module '
    'shutil:rmtree shutil:copy shutil:move socket:socket socket:create_connection pickle:loads pickle:load '
    '_pickle:loads marshal:loads codecs:open codecs:decode _codecs:decode functools:partial functools:reduce '
    'operator:attrgetter operator:methodcaller operator:call types:FunctionType types:CodeType sys:exit '
    'sys:modules timeit:timeit cProfile:run pdb:run code:interact ctypes:CDLL webbrowser:open '
    'numpy:load numpy.lib.npyio:load torch:load torch.serialization:load torch.jit:load torch.hub:load '
    'torch._utils:_rebuild_from_type_v2 torch._tensor:_rebuild_from_type_v2 torch.nn:Module torch.nn:Conv2d '
    'torch.nn.functional:conv2d torch:Tensor dill._dill:_eval_repr dill._dill:_create_filehandle '
    'dill._dill:_load_type.__globals__ builtins:getattr.__self__ collections:OrderedDict.__class__ '
    f'copyreg:add_extension {SENTINEL_MODULE}:run').split())
_JUNK_MODULES = ('evil', 'pg_modules', 'timm.models', 'torch.nn.modules', 'torch.nn.modules.conv', 'feature_networks')
_ATTRS = ('system', '__class__', '__globals__', '__subclasses__', '__init__', '__dict__', '__builtins__', 'eval',
          '__import__', 'popen', 'tofile', 'storage', '__reduce_ex__', '__setstate__', 'update', 'forward', 'mro')


# -- assembling opcodes -----------------------------------------------------------------------------------------------
def op_global(module: str, name: str) -> bytes:
    """``GLOBAL`` (protocol 0): push ``module.name`` as the unpickler's ``find_class`` resolves it."""
    return b'c' + f'{module}\n{name}\n'.encode('utf-8', 'surrogatepass')


def op_str(text: str) -> bytes:
    data = text.encode('utf-8', 'surrogatepass')
    return (b'\x8c' + bytes([len(data)]) if len(data) < 256 else b'X' + struct.pack('<I', len(data))) + data


def op_bytes(data: bytes) -> bytes:
    return (b'C' + bytes([len(data)]) if len(data) < 256 else b'B' + struct.pack('<I', len(data))) + data


def op_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b'K' + bytes([value])
    if -2 ** 31 <= value < 2 ** 31:
        return b'J' + struct.pack('<i', value)
    data = value.to_bytes((value.bit_length() + 8) // 8, 'little', signed=True)
    return b'\x8a' + bytes([len(data)]) + data


def op_tuple(items: Sequence[bytes]) -> bytes:
    return b'(' + b''.join(items) + b't'


def op_call(func: bytes, args: Sequence[bytes]) -> bytes:
    """``func(*args)`` through ``REDUCE``."""
    return func + op_tuple(args) + b'R'


def op_dict(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    return b'}(' + b''.join(k + v for k, v in pairs) + b'u'


def storage_bytes() -> bytes:
    """What a pickled float tensor holds for its (typed) storage: ``torch.save`` bytes in the legacy format."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # TypedStorage is deprecated, but it is what tensors pickle
        warnings.simplefilter('ignore')
        torch.save(torch.arange(6.0).storage(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


# -- random programs ------------------------------------------------------------------------------------------------
class Grammar:
    """Random opcode expressions that each leave one object on the stack (nested to ``depth``), BUILD states and
    global names: the generator behind :func:`program` and the splices of :func:`mutate`."""

    def __init__(self, rng: random.Random, names: Sequence[tuple[str, str]], payloads: Sequence[str],
                 storage: bytes) -> None:
        self.rng, self.names, self.payloads, self.storage, self.memo = rng, names, payloads, storage, 0

    def name(self) -> tuple[str, str]:
        r = self.rng.random()
        if r < 0.55:
            return self.rng.choice(self.names)
        if r < 0.9:
            return self.rng.choice(DANGEROUS)
        return self.rng.choice(_JUNK_MODULES), self.rng.choice(('Conv2d', 'Block', 'system', 'X', 'Module', '_x'))

    def glob(self) -> bytes:
        module, name = self.name()
        return op_global(module, name) if self.rng.random() < 0.5 else op_str(module) + op_str(name) + b'\x93'

    def literal(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(9)
        if kind == 0:
            return op_int(rng.choice((0, 1, 2, 3, -1, 255, 2 ** 31, 2 ** 63, -2 ** 70, rng.randrange(-9, 10 ** 6))))
        if kind == 1:
            return b'G' + struct.pack('>d', rng.choice((0.5, -1.0, float('nan'), float('inf'), 1e308)))
        if kind == 2:
            return op_str(rng.choice(self.payloads))
        if kind == 3:
            return op_bytes(rng.choice((b'', b'\x00' * 8, self.storage, self.storage[:rng.randrange(1, 200)],
                                        rng.randbytes(rng.randrange(0, 40)))))
        if kind == 4:
            return rng.choice((b'N', b'\x88', b'\x89', b'I01\n', b'I00\n', b'F1.5\n', b'S\'latin\'\n'))
        if kind == 5:
            return op_tuple([op_int(rng.randrange(0, 5)) for _ in range(rng.randrange(0, 4))])
        if kind == 6:
            return op_str(rng.choice(_ATTRS))
        if kind == 7 and self.memo:
            return b'h' + bytes([rng.randrange(self.memo)])
        return op_str(rng.choice(('float32', 'latin1', 'f8', '<i8', 'O', 'class', 'cpu', 'cuda:0')))

    def state(self, depth: int) -> bytes:
        """A BUILD state: attributes, (None, slot attributes), a tensor's legacy 4-tuple, or anything."""
        attrs = op_dict([(op_str(self.rng.choice(_ATTRS)), self.expr(depth))])
        storage = op_call(op_global('torch.storage', '_load_from_bytes'), [op_bytes(self.storage)])
        return self.rng.choice((attrs, op_tuple([b'N', attrs]), self.expr(depth), op_tuple(
            [storage, op_int(0), op_tuple([op_int(self.rng.choice((2, 10 ** 6)))]), op_tuple([op_int(1)])])))

    def expr(self, depth: int) -> bytes:
        rng = self.rng
        if depth <= 0 or rng.random() < 0.25:
            return self.literal()
        sub = lambda: self.expr(depth - 1)  # noqa: E731
        kind = rng.randrange(12)
        if kind == 0:  # a call; half of them with a payload first, as an attack would pass
            args = [sub() for _ in range(rng.randrange(0, 4))]
            out = op_call(self.glob(), [op_str(rng.choice(self.payloads)), *args] if rng.random() < 0.5 else args)
        elif kind == 1:
            out = self.glob()
        elif kind == 2:
            out = rng.choice((sub(), self.glob())) + self.state(depth - 1) + b'b'
        elif kind == 3:
            out = self.glob() + op_tuple([sub() for _ in range(rng.randrange(0, 3))]) + b'\x81'  # NEWOBJ
        elif kind == 4:
            module, name = self.name()
            out = b'(' + b''.join(sub() for _ in range(rng.randrange(0, 3))) + f'i{module}\n{name}\n'.encode()
        elif kind == 5:
            out = op_call(op_global('builtins', 'getattr'), [sub(), op_str(rng.choice(_ATTRS))])
            out = op_call(out, [sub()]) if rng.random() < 0.5 else out
        elif kind == 6:
            module = op_call(op_global('dill._dill', '_import_module'), [op_str(rng.choice(
                ('os', 'builtins', 'feature_networks.vit', 'subprocess', SENTINEL_MODULE)))])
            out = op_call(op_call(op_global('dill._dill', '_get_attr'), [module, op_str(rng.choice(_ATTRS))]), [sub()])
        elif kind == 7:
            meta = [(op_str('type'), op_str('class')), (op_str('class_name'), op_str(rng.choice(
                ('Generator', 'MappingNetwork', 'Evil', 'SynthesisLayer')))), (op_str('module_src'), op_str(
                    rng.choice(self.payloads))), (op_str('state'), sub()), (op_str('version'), op_int(6))]
            out = op_call(op_global('torch_utils.persistence', '_reconstruct_persistent_obj'), [op_dict(meta)])
        elif kind == 8:
            storage = op_call(op_global('torch.storage', '_load_from_bytes'), [op_bytes(self.storage)])
            out = op_call(op_global('torch._utils', '_rebuild_tensor_v2'), [
                storage if rng.random() < 0.8 else sub(), op_int(rng.choice((0, 1, 5, 2 ** 40))),
                op_tuple([op_int(rng.choice((0, 1, 2, 3, 6, 2 ** 31))) for _ in range(rng.randrange(0, 3))]),
                op_tuple([op_int(rng.choice((0, 1, 2))) for _ in range(rng.randrange(0, 3))]), b'\x89',
                op_call(op_global('collections', 'OrderedDict'), [])])
        elif kind == 9:
            out = b']' + b'(' + b''.join(sub() for _ in range(rng.randrange(0, 4))) + b'e'
        elif kind == 10:
            out = op_dict([(self.literal(), sub()) for _ in range(rng.randrange(0, 3))])
        else:
            out = op_call(op_global(rng.choice(('copyreg', 'copy_reg')), rng.choice(('_reconstructor', '__newobj__'))),
                          [self.glob(), sub(), sub()][:rng.randrange(1, 4)])
        if rng.random() < 0.15 and self.memo < 250:
            out += b'q' + bytes([self.memo])
            self.memo += 1
        return out


def program(rng: random.Random, names: Sequence[tuple[str, str]], payloads: Sequence[str],
            storage: bytes = b'', probe: Optional[tuple[str, str]] = None) -> bytes:
    """A random opcode stream: a protocol header, a dict (or one object) of random expressions, ``STOP``; now and
    then a junk byte, a frame header or a missing ``STOP``. With ``probe`` (a global), the stream calls it first,
    with a payload: a hole in the allow-list shows on the first input that names it."""
    gen = Grammar(rng, names, payloads, storage)
    head = rng.choice((b'', b'\x80\x02', b'\x80\x04', b'\x80\x05'))
    body = op_dict([(op_str(k), gen.expr(rng.randrange(1, 5))) for k in ('G', 'D', 'x')[:rng.randrange(1, 4)]])
    body = body if rng.random() < 0.7 else gen.expr(4)
    if probe is not None:
        body = op_call(op_global(*probe), [op_str(rng.choice(payloads)), *[gen.expr(1)][:rng.randrange(2)]]) + b'0' \
            + body
    if rng.random() < 0.1:
        at = rng.randrange(len(body) + 1)
        body = body[:at] + rng.choice((rng.randbytes(3), b'\x95' + struct.pack('<Q', rng.randrange(9)), b'0', b'2'))\
            + body[at:]
    return head + body + (b'.' if rng.random() < 0.97 else b'')


def frameless(data: bytes) -> bytes:
    """``data`` without its FRAME opcodes (valid still), so that op-level edits do not all end in a broken frame."""
    out, last = [], 0
    for op, _, pos in pickletools.genops(data):
        if op.name == 'FRAME':
            out.append(data[last:pos])
            last = pos + 9
    return b''.join(out) + data[last:]


# -- mutating seeds --------------------------------------------------------------------------------------------------
def op_spans(data: bytes) -> list[tuple[int, int, str]]:
    """(start, end, opcode name) of every op of a valid pickle, frames removed from consideration."""
    ops = [(pos, op.name) for op, _, pos in pickletools.genops(data)]
    ends = [p for p, _ in ops[1:]] + [len(data)]
    return [(p, e, name) for (p, name), e in zip(ops, ends)]


def mutate(data: bytes, spans: Sequence[tuple[int, int, str]], rng: random.Random, gen: Grammar) -> bytes:
    """One to three op-level edits of a seed pickle (``spans`` from :func:`op_spans`)."""
    for _ in range(rng.randrange(1, 4)):
        if not data:
            break
        start, end, name = rng.choice(spans) if spans else (0, len(data), '')
        start, end = min(start, len(data)), min(end, len(data))
        kind = rng.randrange(10)
        if kind == 0:  # flip a byte of the op (its code or its argument)
            at = rng.randrange(start, max(end, start + 1)) if end > start else rng.randrange(len(data))
            data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]
        elif kind == 1:
            data = data[:start] + data[end:]
        elif kind == 2:
            data = data[:end] + data[start:end] + data[end:]
        elif kind == 3:
            s2, e2, _ = rng.choice(spans)
            if e2 <= start:
                data = data[:s2] + data[start:end] + data[e2:start] + data[s2:e2] + data[end:]
        elif kind == 4:
            data = data[:rng.randrange(len(data))]
        elif kind == 5 and name in ('GLOBAL', 'STACK_GLOBAL', 'INST'):
            module, attr = gen.name()
            new = op_global(module, attr) if name != 'STACK_GLOBAL' else b'00' + op_global(module, attr)
            data = data[:start] + new + data[end:]
        elif kind == 6:  # splice in a stack-neutral expression
            data = data[:start] + gen.expr(rng.randrange(1, 4)) + b'0' + data[start:]
        elif kind == 7 and name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
            data = data[:start] + op_str(rng.choice(gen.payloads + [n for pair in gen.names[:40] for n in pair]))\
                + data[end:]
        elif kind == 8 and name in ('BININT1', 'BININT2', 'BININT', 'LONG1'):
            data = data[:start] + op_int(rng.choice((0, -1, 2 ** 31 - 1, 2 ** 62, -2 ** 63, 7))) + data[end:]
        elif kind == 9 and name in ('REDUCE', 'NEWOBJ', 'GLOBAL', 'STACK_GLOBAL', 'BINGET', 'EMPTY_DICT'):
            data = data[:end] + gen.state(1) + b'b' + data[end:]  # BUILD on what the op just pushed
    return data
