"""``python -m san_ext.bench.fuzz_unpickler``: fuzz the restricted StyleGAN-XL / StyleSAN-XL pickle reader.

Reads ``--n`` fuzzed inputs with :func:`san_ext.legacy.read_pickle` (inputs: :mod:`san_ext.bench.pickle_fuzz`,
oracle: :mod:`san_ext.bench.pickle_oracle`): mutated StyleGAN-XL-format pickles written here (persistent-class
records with embedded source, projected-D classes by module path, a spectral-norm conv with its hooks, tensors, numpy
values, EasyDict, dill-style closures; protocols 0, 2 and 4) and random opcode streams. Every input must load inertly,
be refused, or be rejected with the reader's own error; the table counts each outcome and any failure (escaped
exception, code run, sentinel file, non-inert result, polluted reader). Exit status 1 when a failure was found; the
failing inputs are in the JSON (hex). ``tests/test_legacy_fuzz.py`` runs a CI-sized share of the same engine.

\b
Examples:
  python -m san_ext.bench.fuzz_unpickler --n 50000
  python -m san_ext.bench.fuzz_unpickler --n 2000 --seed 3 --out runs/fuzz.json
"""

from __future__ import annotations

import contextlib
import os
import pickle
import platform
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn

from san_ext.legacy.unpickler import allowed_globals

from .common import render_table, write_json
from .pickle_fuzz import frameless, op_call, op_dict, op_global, op_int, op_str
from .pickle_oracle import FAILURES, OUTCOMES, Fuzzer, FuzzResult

__all__ = ['dill_closure_pickle', 'fuzz_names', 'format_table', 'run_fuzz', 'stylegan_seed_pickles']

_SRC = '# stand-in for the embedded module source\nclass SuperresGenerator: ...\n'


def _reconstruct_persistent_obj(meta):  # pickled by name, as upstream's torch_utils.persistence function
    raise AssertionError('never called')


_reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'

def _fake(module: str, name: str, base: type = nn.Module) -> type:
    return type(name, (base,), {'__module__': module, '__qualname__': name})


class _Persistent(nn.Module):
    """Pickles as a ``@persistence.persistent_class`` object: (reconstruct function, meta with source and state)."""

    def __reduce__(self):
        meta = dict(type='class', version=6, module_src=_SRC, class_name=type(self).__name__,
                    state=self.__dict__.copy())
        return _reconstruct_persistent_obj, (meta,)


@contextlib.contextmanager
def _upstream_names(objects: dict[str, object]) -> Iterator[None]:
    """Register ``{qualified name: object}`` in stand-in modules while pickling (the pickler checks the names)."""
    added, old = [], {}
    try:
        for qualname, obj in objects.items():
            module, _, name = qualname.rpartition('.')
            parts = module.split('.')
            for i in range(1, len(parts) + 1):
                if '.'.join(parts[:i]) not in sys.modules:
                    sys.modules['.'.join(parts[:i])] = types.ModuleType('.'.join(parts[:i]))
                    added.append('.'.join(parts[:i]))
            old[qualname] = getattr(sys.modules[module], name, None)
            setattr(sys.modules[module], name, obj)
        yield
    finally:
        for qualname, value in old.items():
            module, _, name = qualname.rpartition('.')
            if module in sys.modules and module not in added:
                setattr(sys.modules[module], name, value)
        for module in reversed(added):
            sys.modules.pop(module, None)


def _snapshot() -> tuple[dict, dict[str, object]]:
    """A tiny StyleGAN-XL snapshot dict and the upstream names its classes pickle under."""
    easydict = _fake('dnnlib.util', 'EasyDict', dict)
    proj, block = _fake('pg_modules.discriminator', 'ProjectedDiscriminator'), _fake('pg_modules.blocks', 'DownBlock')
    vit_block = _fake('timm.models.vision_transformer', 'Block')
    forward_flex = types.FunctionType(_reconstruct_persistent_obj.__code__, {}, 'forward_flex')
    forward_flex.__module__, forward_flex.__qualname__ = 'feature_networks.vit', 'forward_flex'
    mapping = type('MappingNetwork', (_Persistent,), {})()
    mapping.fc0 = nn.Linear(2, 2)
    mapping.register_buffer('w_avg', torch.zeros(2))
    mapping.__dict__.update(z_dim=2, w_avg_beta=np.float64(0.995), size=np.array([4, 4]), flag=np.bool_(True),
                            _init_kwargs=easydict(z_dim=2, num_layers=2, layer_names=['L0_36_128']))
    G = type('Generator', (_Persistent,), {})()
    G.mapping = mapping
    D = proj()
    D.add_module('main', nn.Sequential(block(), nn.BatchNorm2d(2)))
    D.main[0].conv = nn.utils.spectral_norm(nn.Conv2d(2, 2, 1))
    D.add_module('vit', vit_block())
    D.vit.forward_flex = forward_flex
    D.backbones = ['deit_tiny_distilled_patch16_224']
    data = {'G': G, 'G_ema': G, 'D': D, 'augment_pipe': None,
            'training_set_kwargs': easydict(class_name='training.dataset.ImageFolderDataset', resolution=16),
            'progress': {'cur_nimg': torch.LongTensor([4000]), 'best_fid': 9999.0}}
    names = {'dnnlib.util.EasyDict': easydict, 'pg_modules.discriminator.ProjectedDiscriminator': proj,
             'pg_modules.blocks.DownBlock': block, 'timm.models.vision_transformer.Block': vit_block,
             'feature_networks.vit.forward_flex': forward_flex,
             'torch_utils.persistence._reconstruct_persistent_obj': _reconstruct_persistent_obj}
    return data, names


def dill_closure_pickle() -> bytes:
    """A ViT forward hook as dill pickles it by value (code object, module globals, closure cell), opcode by opcode."""
    dill = lambda name: op_global('dill._dill', name)  # noqa: E731
    code = op_call(dill('_create_code'), [op_int(1), op_int(0), op_int(0), op_int(2), op_int(3), op_int(19),
                                         op_str('x'), op_str('hook'), op_str('feature_networks/vit.py')])
    cell = op_call(dill('_create_cell'), [op_str('1')])
    func = op_call(dill('_create_function'), [code, op_global('feature_networks.vit', '__dict__'), op_str('hook'),
                                              b'N', b'(' + cell + b't'])
    func_type = op_call(dill('_load_type'), [op_str('FunctionType')])
    setattr_ = op_call(dill('_setattr'), [b'h\x00', op_str('__qualname__'), op_str('get_activation.<locals>.hook')])
    vit = op_call(dill('_get_attr'), [op_call(dill('_import_module'), [op_str('feature_networks.vit')]),
                                      op_str('forward_flex')])
    return b'\x80\x02' + op_dict([(op_str('hook'), func + b'q\x00'), (op_str('type'), func_type),
                                  (op_str('post'), setattr_), (op_str('flex'), vit)]) + b'.'


def stylegan_seed_pickles() -> list[bytes]:
    """Seeds: a tiny StyleGAN-XL-format snapshot in protocols 0, 2 and 4 (frames removed), and a dill closure."""
    data, names = _snapshot()
    with _upstream_names(names):
        seeds = [pickle.dumps(data, protocol=p) for p in (0, 2)] + [frameless(pickle.dumps(data, protocol=4))]
    return seeds + [dill_closure_pickle()]


def fuzz_names() -> list[tuple[str, str]]:
    """The globals that random programs call: the allow-list and a few torch.nn module classes."""
    return sorted(allowed_globals()) + [('torch.nn.modules.conv', 'Conv2d'), ('torch.nn.modules.linear', 'Linear'),
                                        ('torch.nn.modules.container', 'Sequential')]


def run_fuzz(n: int, seed: int = 0, mutated_share: float = 0.5, workdir: str | os.PathLike | None = None,
             extra_seeds: tuple[bytes, ...] = ()) -> FuzzResult:
    """Fuzz the reader with ``n`` inputs (``mutated_share`` of them mutated seeds) in ``workdir`` (a temp dir)."""
    with contextlib.ExitStack() as stack:
        shm = '/dev/shm' if os.access('/dev/shm', os.W_OK) else None  # a RAM folder: each input is a file written
        where = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix='fuzz_unpickler_', dir=shm))
        fuzzer = Fuzzer([*stylegan_seed_pickles(), *extra_seeds], fuzz_names(), Path(where), seed=seed)
        return fuzzer.run(n, mutated_share)


def format_table(result: FuzzResult) -> str:
    """Inputs per source and outcome (failures last), and the rate."""
    cols = [*OUTCOMES, *FAILURES]
    body = [[src, str(sum(c.values())), *(str(c[k]) for k in cols)] for src, c in sorted(result.counts.items())]
    body.append(['all', str(result.n), *(str(result.total(k)) for k in cols)])
    table = render_table(['source', 'inputs', *cols], body, 1)
    return table + f'{result.n} inputs in {result.seconds:.1f} s ({result.n / max(result.seconds, 1e-9):.0f}/s)\n'


@click.command(help=__doc__)
@click.option('--n', type=click.IntRange(1), default=50_000, show_default=True, help='Inputs to read.')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of the input generator.')
@click.option('--mutated-share', type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help='Share of inputs that are mutated seed pickles (the rest: random opcode streams).')
@click.option('--out', type=click.Path(dir_okay=False), default='runs/bench_fuzz_unpickler.json', show_default=True,
              help='JSON output path.')
def main(n: int, seed: int, mutated_share: float, out: str) -> None:
    torch.set_num_threads(1)
    result = run_fuzz(n, seed, mutated_share)
    click.echo(format_table(result))
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    info = dict(result.to_dict(), seed=seed, mutated_share=mutated_share, python=sys.version.split()[0],
                torch=torch.__version__, numpy=np.__version__, machine=platform.processor() or platform.machine(),
                cpus=os.cpu_count(), loadavg=load)
    click.echo(f'load average {load}; wrote {write_json(out, info)}')
    failures = sum(result.total(k) for k in FAILURES)
    if failures:
        raise click.ClickException(f'{failures} failing inputs (see {out})')


if __name__ == '__main__':
    main()
