"""Fuzzing san_ext.legacy's pickle reader: every input loads inertly or raises the reader's own error, and never runs
code (inputs: san_ext.bench.pickle_fuzz; oracle: san_ext.bench.pickle_oracle; the long run:
``python -m san_ext.bench.fuzz_unpickler``).

Inputs: mutated StyleGAN-XL-format pickles (a snapshot written with tests/legacy_pickles.py's upstream structure, and
the benchmark's own seeds) and random opcode streams, 2,000 of them here, plus hypothesis-drawn token streams. The
oracle is tested too: a fuzz whose judge cannot see a planted hole passes for nothing. The last group pins the traps
of the stock unpicklers that the fuzz ran into (a memo index that allocates gigabytes, counted reads, escaping errors).
"""

from __future__ import annotations

import os
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from legacy_pickles import (  # tests/legacy_pickles.py
    EasyDict,
    d_class_of,
    dump,
    empty,
    module_tree,
    persistent,
    upstream,
)

from san_ext.bench import pickle_oracle
from san_ext.bench.fuzz_unpickler import fuzz_names, stylegan_seed_pickles
from san_ext.bench.pickle_fuzz import (
    DANGEROUS,
    frameless,
    op_bytes,
    op_call,
    op_global,
    op_int,
    op_str,
    op_tuple,
    storage_bytes,
)
from san_ext.bench.pickle_oracle import OUTCOMES, Fuzzer, inert_violation
from san_ext.legacy import LegacyPickleError, read_pickle
from san_ext.legacy import unpickler as reader
from san_ext.legacy.records import record_class

pytestmark = pytest.mark.usefixtures('one_thread')
CI_INPUTS = 2000


def upstream_snapshot() -> dict:
    """A small snapshot with upstream's structure: persistent G records (module source, _init_kwargs, numpy
    attributes), a projected D by module path with timm blocks, spectral-norm convs (their hooks pickled too) and
    batch-norm buffers, EasyDict training kwargs, progress tensors."""
    g_flat = {'mapping.fc0.weight': torch.randn(4, 4), 'mapping.fc0.bias': torch.randn(4),
              'mapping.w_avg': torch.zeros(4), 'synthesis.L0_36_128.weight': torch.randn(2, 2, 3, 3),
              'synthesis.L0_36_128.magnitude_ema': torch.ones([])}
    G = module_tree(g_flat, persistent('Generator', img_resolution=16, in_size=np.array([36, 36]),
                                       _init_kwargs=EasyDict(z_dim=4, c_dim=0)),
                    lambda path: persistent({'mapping': 'MappingNetwork', 'mapping.fc0': 'FullyConnectedLayer',
                                             'synthesis': 'SynthesisNetwork'}.get(path, 'SynthesisLayer')))
    deit, lite0 = 'deit_tiny_distilled_patch16_224', 'tf_efficientnet_lite0'
    d_flat = {f'feature_networks.{deit}.pretrained.model.blocks.0.attn.qkv.weight': torch.randn(6, 2),
              f'feature_networks.{lite0}.pretrained.layer0.0.weight': torch.randn(2, 3, 3, 3),
              f'feature_networks.{lite0}.pretrained.layer0.1.running_mean': torch.zeros(2),
              f'feature_networks.{lite0}.scratch.layer3_csm.out_conv.weight': torch.randn(2, 2, 1, 1),
              f'discriminators.{deit}.mini_discs.0.main.0.main.0.weight_orig': torch.randn(2, 2, 4, 4),
              f'discriminators.{deit}.mini_discs.0.main.0.main.0.weight_u': torch.randn(2),
              f'discriminators.{deit}.mini_discs.0.main.0.main.0.weight_v': torch.randn(32)}
    D = module_tree(d_flat, empty(upstream('pg_modules.discriminator.ProjectedDiscriminator')), d_class_of(False, True))
    D.backbones = [deit, lite0]
    return {'G': G, 'G_ema': G, 'D': D, 'augment_pipe': None,
            'training_set_kwargs': EasyDict(class_name='training.dataset.ImageFolderDataset', resolution=16),
            'progress': {'cur_nimg': torch.LongTensor([4000]), 'best_fid': 9999.0}}


@pytest.fixture(scope='module')
def workdir():
    """A folder on tmpfs where there is one: each input is written to a file and read back."""
    fast = '/dev/shm' if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix='fuzz_', dir=fast) as d:
        yield Path(d)


@pytest.fixture(scope='module')
def seeds(workdir) -> list[bytes]:
    data = upstream_snapshot()
    ours = [dump(workdir / f'snap{p}.pkl', data, protocol=p).read_bytes() for p in (0, 2, 4)]
    return [*map(frameless, ours), *stylegan_seed_pickles()]


@pytest.fixture(scope='module')
def fuzzer(seeds, workdir) -> Fuzzer:
    return Fuzzer(seeds, fuzz_names(), workdir / 'oracle', seed=0)


def test_seeds_are_upstream_format_pickles_the_reader_loads(seeds, workdir):
    for i, data in enumerate(seeds[:3]):
        (workdir / 'seed.pkl').write_bytes(data)
        out = read_pickle(workdir / 'seed.pkl')
        assert out['G'].class_name == 'Generator' and out['D'].qualname.endswith('ProjectedDiscriminator'), i
        assert inert_violation(out) is None


def test_fuzzed_pickles_load_inertly_or_raise_the_readers_error(seeds, workdir):
    """CI share of the fuzz: 2,000 inputs (half mutated seeds, half random opcode streams); no failure, and every
    outcome common enough that the inputs reach past the first opcode."""
    fuzz = Fuzzer(seeds, fuzz_names(), workdir / 'ci', seed=2026)
    result = fuzz.run(CI_INPUTS)
    assert result.n == CI_INPUTS
    assert not result.failures, result.failures[:3]
    for outcome in OUTCOMES:
        assert result.total(outcome) > CI_INPUTS // 10, dict(result.counts)
    assert min(sum(c.values()) for c in result.counts.values()) > CI_INPUTS // 3


TOKENS = [op_global(m, n) for m, n in (*fuzz_names()[::4], *DANGEROUS[::3])] + [
    b'(', b't', b'R', b'b', b'\x81', b']', b'}', b'e', b'u', b's', b'a', b'0', b'2', b'N', b'\x88', b'\x8f', b'\x90',
    b'\x93', b'\x94', b'h\x00', b'q\x00', b'\x85', b'\x86', op_int(1), op_int(-1), op_int(2 ** 40), op_str('f8'),
    op_str('system'), op_str('__class__'), op_bytes(storage_bytes()), op_tuple([op_int(2)]),
    op_call(op_global('torch.storage', '_load_from_bytes'), [op_bytes(storage_bytes())])]


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=24))
def test_hypothesis_token_streams_load_inertly_or_raise_the_readers_error(fuzzer, tokens):
    outcome, detail = fuzzer.check(b'\x80\x04' + b''.join(tokens) + b'.')
    assert outcome in OUTCOMES, detail


# -- the oracle sees planted holes -----------------------------------------------------------------------------------
def test_oracle_flags_code_that_runs(fuzzer, monkeypatch):
    table = reader._Unpickler._constructors
    monkeypatch.setattr(reader._Unpickler, '_constructors',
                        lambda self: {**table(self), ('builtins', 'exec'): exec, ('os', 'getcwd'): os.getcwd})
    code = f'open({str(fuzzer.sentinel)!r}, "w").close()'
    outcome, detail = fuzzer.check(op_call(op_global('builtins', 'exec'), [op_str(code)]) + b'.')
    assert outcome == 'ran_code' and 'exec' in detail and not fuzzer.sentinel.exists()
    assert fuzzer.check(op_global('os', 'getcwd') + b'.')[0] == 'not_inert'


def test_oracle_flags_escaping_errors_and_polluted_functions(fuzzer, monkeypatch):
    def overflowing_reader(path):
        raise OverflowError('x')
    monkeypatch.setattr(pickle_oracle, 'read_pickle', overflowing_reader)
    assert fuzzer.check(b'N.') == ('escaped', 'OverflowError: x')
    monkeypatch.undo()
    reader._device.planted = 1
    assert fuzzer.check(b'N.')[0] == 'polluted' and 'planted' not in vars(reader._device)


def test_inert_check_tells_records_and_data_from_live_objects():
    cls = record_class('pg_modules.blocks', 'DownBlock')
    assert inert_violation({'a': [cls(), cls, torch.zeros(2), np.float64(1), {1, 2}, reader._rebuild_tensor]}) is None
    for live in (os.system, {}.keys, torch.nn.Linear(1, 1), (lambda: 0).__code__, type('X', (), {}),
                 torch.zeros(1, requires_grad=True) * 2):
        assert inert_violation([1, {'x': live}]) is not None, live


# -- traps of the stock unpicklers the fuzz found ----------------------------------------------------------------------
def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_memo_index_allocates_nothing(tmp_path):
    """The C unpickler keeps its memo in an array sized by the largest index: 11 bytes asking for index 2**24 take
    128 MB there (2**30: 8 GB, and the process is killed); a dict memo takes one entry."""
    path = tmp_path / 'memo.pkl'
    path.write_bytes(b'\x80\x02Nr' + (2 ** 24).to_bytes(4, 'little') + b'.')
    assert peak_bytes(lambda: read_pickle(path)) < 4 * 2 ** 20


def test_a_counted_read_longer_than_the_file_allocates_nothing(tmp_path):
    path = tmp_path / 'bytearray.pkl'
    path.write_bytes(b'\x80\x05\x96' + (2 ** 27).to_bytes(8, 'little') + b'abcd.')

    def read():
        with pytest.raises(LegacyPickleError, match='runs past the end of the file'):
            read_pickle(path)
    assert peak_bytes(read) < 4 * 2 ** 20


DTYPE = op_call(op_global('numpy', 'dtype'), [op_str('i8'), b'\x89', b'\x88'])
MALFORMED = {  # inputs that made the earlier reader raise something other than its own error
    'frame length over maxsize': b'\x80\x04\x95' + (2 ** 63 + 5).to_bytes(8, 'little') + b'N.',
    'bytearray over maxsize': b'\x80\x05\x96' + (2 ** 63 + 5).to_bytes(8, 'little') + b'.',
    'unknown opcode': b'\x80\x02\xff.',
    'truncated int': b'\x80\x02J\x01\x00',
    'empty stack': b'R.',
    'missing memo': b'h\x05.',
    'empty file': b'',
    'numpy dtype state numpy chokes on': DTYPE + op_tuple([op_int(3), op_str('<'), *[b'N'] * 4, op_int(-1), op_int(-1),
                                                           op_int(0)]) + b'b.',
    'numpy dtype with forged flags': DTYPE + op_tuple([op_int(3), op_str('<'), *[b'N'] * 3, op_int(-1), op_int(-1),
                                                       op_int(1 | 8 | 16)]) + b'b.',
}


@pytest.mark.parametrize('name', MALFORMED)
def test_malformed_input_raises_the_readers_error_naming_the_file(tmp_path, name):
    path = tmp_path / 'bad.pkl'
    path.write_bytes(MALFORMED[name])
    with pytest.raises(LegacyPickleError) as err:
        read_pickle(path)
    assert str(path) in str(err.value)


def test_forged_dtype_flags_are_named(tmp_path):
    path = tmp_path / 'flags.pkl'
    path.write_bytes(MALFORMED['numpy dtype with forged flags'])
    with pytest.raises(LegacyPickleError, match=r'numpy dtype int64 with flags 25 \(numpy derives 0'):
        read_pickle(path)


def test_error_messages_stay_short_for_nested_shared_references(tmp_path):
    """A list holding its predecessor twice, 24 deep, is 150 bytes; its full repr would be 2**24 elements long."""
    nest = b']q\x00'
    for i in range(24):
        nest += b'(h' + bytes([i]) + b'h' + bytes([i]) + b'lq' + bytes([i + 1]) + b'0'
    storage = op_call(op_global('torch.storage', '_load_from_bytes'), [op_bytes(storage_bytes())])
    data = op_call(op_global('torch._utils', '_rebuild_tensor_v2'), [storage, op_int(0), b'h\x18', b')']) + b'.'
    path = tmp_path / 'nest.pkl'
    path.write_bytes(nest + data)
    with pytest.raises(LegacyPickleError, match='bad tensor size') as err:
        read_pickle(path)
    assert len(str(err.value)) < 1000
