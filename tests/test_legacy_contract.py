"""Contracts of san_ext.legacy that the broader legacy tests reach without pinning: the exact refusal messages of the
restricted reader (calls of references and rebuilt functions, ``torch.device`` arguments, ``NEWOBJ_EX`` keyword
arguments, dill's ``_create_array``), that ``NEWOBJ_EX`` without keywords and dill's ``_create_array`` build what
``NEWOBJ`` and numpy's own pickles build, :meth:`ModuleView.find`, the text of :class:`ConversionReport` (summary,
warnings and their log records, key listings), the head arithmetic of the discriminator conversion
(``_split_direction``, ``_class_vectors``) checked against numpy in float64, and the generator conversion: its
refusals and report, the stem configuration read from recorded constructor arguments, the comparison of each rebuilt
synthesis layer with the recorded one (sizes whole, paddings, a relative tolerance of 1e-9), and the search over
superres up-factors. Each test names the planted bug it fails on.
"""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from legacy_payloads import refused_message, write  # tests/legacy_payloads.py
from legacy_pickles import (  # tests/legacy_pickles.py: writers of upstream-format pickles
    CHAIN,
    dump,
    fake_function,
    make_G,
    persistent,
    upstream_generator,
)
from messages import raised_message  # tests/messages.py

from san_ext import legacy
from san_ext.bench.pickle_fuzz import op_call, op_global, op_int, op_str, op_tuple
from san_ext.legacy import LegacyPickleError, RefusedError, read_pickle
from san_ext.legacy import unpickler as reader
from san_ext.legacy.convert import ConversionError, ConversionReport
from san_ext.legacy.discriminator import _class_vectors, _split_direction
from san_ext.legacy.generator import _rename, _stem_config, convert_generator
from san_ext.legacy.records import ModuleView, PersistentRecord, Record, record_class
from san_ext.networks import GeneratorConfig, SuperresConfig

G, s = op_global, op_str
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def stem():
    return make_G((), seed=5)


# -- calls the reader refuses: stored references and functions rebuilt by value ----------------------------------------
def test_calling_a_stored_function_reference_is_refused_with_the_full_message(tmp_path):
    """Bug: FunctionRef.__call__'s message text altered ('XX...XX', upper case)."""
    path = tmp_path / 'ref.pkl'
    msg = refused_message(path, op_call(G('torch.nn.functional', 'interpolate'), [op_int(1)]) + b'.', RefusedError)
    assert msg == (f'{path}: the pickle calls torch.nn.functional.interpolate, which is allowed only as a stored '
                   'reference; refused for safety (nothing named by a pickle is run)')


def test_calling_a_function_rebuilt_by_dill_is_refused_with_the_full_message(tmp_path):
    """Bug: CallRecord.__call__ raises with no message (None) or an altered text."""
    path = tmp_path / 'call.pkl'
    code = op_call(G('dill._dill', '_create_code'), [op_int(3)])
    msg = refused_message(path, op_call(code, [op_int(1)]) + b'.', RefusedError)
    assert msg == (f'{path}: the pickle calls the result of dill._create_code(...) (a function rebuilt from the '
                   'pickle); refused for safety')


# -- torch.device ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('args,expected', [([s('cpu')], torch.device('cpu')),
                                           ([s('cuda'), op_int(1)], torch.device('cuda', 1)),
                                           ([op_int(2)], torch.device(2))], ids=['type', 'type+index', 'index'])
def test_device_takes_one_or_two_string_or_int_arguments(tmp_path, args, expected):
    """Bug: the argument count check made '< 2', which refuses torch.device('cuda', 1)."""
    assert read_pickle(write(tmp_path, op_call(G('torch', 'device'), args) + b'.')) == expected


@pytest.mark.parametrize('args,shown', [([], '()'), ([s('cpu'), op_int(0), op_int(1)], "('cpu', 0, 1)"),
                                        ([b'G' + struct.pack('>d', 1.5)], '(1.5,)'),
                                        ([b'N'], '(None,)'), ([s('cuda'), b'N'], "('cuda', None)")],
                         ids=['none', 'three', 'float', 'None', 'index None'])
def test_bad_device_arguments_are_refused_with_the_full_message(tmp_path, args, shown):
    """Bugs: the count check made '<= 3' or joined to the type check with 'and' (three ints/strings, or one float,
    reach torch.device and fail there with another message); the message None or showing None for the arguments."""
    path = tmp_path / 'dev.pkl'
    msg = refused_message(path, op_call(G('torch', 'device'), args) + b'.', LegacyPickleError)
    assert msg == f'{path}: bad torch.device arguments in the pickle: {shown}'


def test_device_constructor_refuses_directly_without_calling_torch():
    """The same contract on the constructor itself (no path): every bad call is the reader's LegacyPickleError."""
    for args, shown in [(('cpu', 0, 1), "('cpu', 0, 1)"), ((1.5,), '(1.5,)'), ((), '()')]:
        with pytest.raises(LegacyPickleError) as err:
            reader._device(*args)
        assert str(err.value) == f'bad torch.device arguments in the pickle: {shown}'
    assert reader._device('cuda', 3) == torch.device('cuda', 3) and reader._device('cpu') == torch.device('cpu')


# -- NEWOBJ_EX ---------------------------------------------------------------------------------------------------------
_CLS = G('pg_modules.blocks', 'DownBlock')
_ARGS = op_tuple([op_int(3), s('x')])
_STATE = b'}' + s('a') + op_int(1) + b's'


def test_newobj_ex_without_keywords_builds_what_newobj_builds(tmp_path):
    """Bugs: NEWOBJ_EX not popping its keywords, or refusing an empty keyword dict ('isinstance(kwargs, dict) or')."""
    via_newobj = read_pickle(write(tmp_path, b'\x80\x02' + _CLS + _ARGS + b'\x81' + _STATE + b'b.', 'n.pkl'))
    via_ex = read_pickle(write(tmp_path, b'\x80\x04' + _CLS + _ARGS + b'}\x92' + _STATE + b'b.', 'x.pkl'))
    for out in (via_newobj, via_ex):
        assert isinstance(out, Record) and out.qualname == 'pg_modules.blocks.DownBlock'
        assert out.args == (3, 'x') and out.state == {'a': 1}
    assert type(via_ex).__qualname__ == type(via_newobj).__qualname__ == 'Record[pg_modules.blocks.DownBlock]'


@pytest.mark.parametrize('kwargs,shown', [(b'}' + s('a') + op_int(1) + b's', "{'a': 1}"), (b']', '[]'),
                                          (op_int(0), '0')], ids=['dict', 'empty list', 'zero'])
def test_newobj_ex_with_keywords_is_refused_with_the_full_message(tmp_path, kwargs, shown):
    """Bugs: the check joined with 'and' (non-empty keywords, or empty non-dict ones, pass); the message None,
    showing None for the keywords, or its tail altered."""
    path = tmp_path / 'ex.pkl'
    msg = refused_message(path, b'\x80\x04' + _CLS + _ARGS + kwargs + b'\x92.', LegacyPickleError)
    assert msg == f'{path}: NEWOBJ_EX with keyword arguments {shown}; upstream pickles pass none'


# -- dill's _create_array ----------------------------------------------------------------------------------------------
class Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def dill_array(path: Path, f, args, state) -> Path:
    """What dill writes for an ndarray (subclass): ``dill._dill._create_array(f, args, state, npdict)``."""
    return dump(path, Reduce(fake_function('dill._dill._create_array'), f, args, state, None))


@pytest.mark.parametrize('array', [np.arange(6, dtype='<f4').reshape(2, 3) / 4,
                                   np.asfortranarray(np.arange(12, dtype='<f8').reshape(3, 4) - 5.5),
                                   np.array([[1, -2], [3, 2 ** 40]], dtype='<i8')], ids=['f32', 'fortran', 'i64'])
def test_dill_create_array_rebuilds_the_array(tmp_path, array):
    """Bugs: _create_array refusing a genuine array (a check negated), building None, or setting no state."""
    f, args, state = array.__reduce__()
    out = read_pickle(dill_array(tmp_path / 'a.pkl', f, args, state))
    assert type(out) is np.ndarray and out.dtype == array.dtype and out.shape == array.shape
    assert np.array_equal(out, array) and out.flags.f_contiguous == array.flags.f_contiguous
    assert out.tobytes(order='A') == array.tobytes(order='A')


def _refusal(tmp_path: Path, f, args, state) -> str:
    path = dill_array(tmp_path / 'bad.pkl', f, args, state)
    with pytest.raises(RefusedError) as err:
        read_pickle(path)
    assert type(err.value) is RefusedError
    return str(err.value)


def test_dill_create_array_refuses_another_function_with_the_full_message(tmp_path):
    """Bugs: a wrong ``f`` with tuple args and state let through ('f is not ... and not isinstance(args, tuple)'),
    the message None or showing None for ``f``."""
    array = np.arange(4.0)
    _, args, state = array.__reduce__()
    path = tmp_path / 'bad.pkl'
    msg = _refusal(tmp_path, fake_function('torch.nn.functional.interpolate'), args, state)
    assert msg == f'{path}: refused for safety: dill _create_array with <record torch.nn.functional.interpolate>'
    assert _refusal(tmp_path, 7, args, state) == f'{path}: refused for safety: dill _create_array with 7'


@pytest.mark.parametrize('which', ['args', 'state'])
def test_dill_create_array_refuses_non_tuple_args_or_state(tmp_path, which):
    """Bugs: the args / state checks joined with 'and', so a list of args or a list state (which numpy's own
    constructor and __setstate__ would take) gets through."""
    f, args, state = np.arange(4.0).__reduce__()
    args, state = (list(args), state) if which == 'args' else (args, list(state))
    msg = _refusal(tmp_path, f, args, state)
    assert msg == f'{tmp_path / "bad.pkl"}: refused for safety: dill _create_array with {reader._np_reconstruct!r}'


# -- ModuleView.find ---------------------------------------------------------------------------------------------------
def module(name: str, **children) -> Record:
    rec = record_class('pg_modules.blocks', name)()
    rec.state = {'_modules': dict(children)}
    return rec


def test_find_returns_self_or_the_first_match_depth_first():
    """Bugs: find matching on '!=' (returns the root for any other name), not recursing (found = None,
    child.find(None)), calling a missing method, or giving up after the first child ('if found is None')."""
    first, second = module('Target'), module('Target')
    tree = module('Root', leaf=module('Leaf'), gap=None, mid=module('Mid', deep=module('Leaf'), hit=first),
                  late=second)
    view = ModuleView(tree, 'D')
    assert view.find('Root') is not None and view.find('Root').record is tree and view.find('Root').path == 'D'
    found = view.find('Target')
    assert found is not None and found.record is first and found.path == 'D.mid.hit'
    assert view.find('Mid').path == 'D.mid' and view.find('Leaf').path == 'D.leaf'
    assert view.find('Nothing') is None
    assert ModuleView(module('Root', a=module('A'), b=module('B', c=second))).find('B').path == 'b'


# -- ConversionReport --------------------------------------------------------------------------------------------------
def test_summary_lists_every_part_in_order():
    """Bugs in ConversionReport.summary: any list replaced (None, '=' for '+=', '-='), drop counts wrong (start 1, step
    2 or -1, looked up under None or without a default), lines None, listings of None, a different separator."""
    report = ConversionReport('D', mapped=7, dropped={'x.norm': 'ViT heads', 'x.head': 'ViT heads', 'y': 'unused',
                                                      'z.head': 'ViT heads'},
                              rewritten=['plain -> SAN'], warnings=['careful'], missing=['k2', 'k1'],
                              unexpected=['u'])
    assert report.summary() == ('D: 7 tensors mapped\n'
                                '  dropped 3: ViT heads\n'
                                '  dropped 1: unused\n'
                                '  rewritten: plain -> SAN\n'
                                '  warning: careful\n'
                                '  NOT FILLED (kept their init): k1, k2\n'
                                '  NOT USED: u')


def test_summary_of_each_part_alone():
    """Each later part alone still follows the first line (a '=' in place of '+=' would drop it)."""
    assert ConversionReport('G').summary() == 'G: 0 tensors mapped'
    assert ConversionReport('G', rewritten=['r']).summary() == 'G: 0 tensors mapped\n  rewritten: r'
    assert ConversionReport('G', warnings=['w']).summary() == 'G: 0 tensors mapped\n  warning: w'
    assert ConversionReport('G', dropped={'a': 'why'}).summary() == 'G: 0 tensors mapped\n  dropped 1: why'
    assert ConversionReport('G', unexpected=['b', 'a']).summary() == 'G: 0 tensors mapped\n  NOT USED: a, b'


KEYS = [f'k{i:02d}' for i in range(20)]


@pytest.mark.parametrize('n,tail', [(1, ''), (11, ''), (12, ''), (13, ' ... and 1 more'), (20, ' ... and 8 more')])
def test_key_listings_show_twelve_sorted_keys_and_count_the_rest(n, tail):
    """Bugs in _listing: the ' ... and N more' tail never or always added, added at exactly 12 ('>='), counting
    len + 12, 'XXXX' as the empty tail, another separator."""
    keys = KEYS[:n][::-1]  # given in reverse: listed sorted
    shown = ', '.join(KEYS[:min(n, 12)])
    assert ConversionReport('G', missing=keys).summary() == f'G: 0 tensors mapped\n  NOT FILLED (kept their init): ' \
                                                            f'{shown}{tail}'
    assert ConversionReport('G', unexpected=keys).summary() == f'G: 0 tensors mapped\n  NOT USED: {shown}{tail}'


def test_warn_keeps_the_message_and_logs_it_with_the_component(caplog):
    """Bugs in ConversionReport.warn: None stored, the log format or its arguments dropped, altered or None."""
    report = ConversionReport('D')
    with caplog.at_level(logging.WARNING, logger='san_ext.legacy.convert'):
        report.warn('heads rewritten (50% of rows)')
    assert report.warnings == ['heads rewritten (50% of rows)']
    records = [r for r in caplog.records if r.name == 'san_ext.legacy.convert']
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].getMessage() == 'D: heads rewritten (50% of rows)'
    assert report.summary() == 'D: 0 tensors mapped\n  warning: heads rewritten (50% of rows)'


# -- discriminator head arithmetic -------------------------------------------------------------------------------------
def test_split_direction_gives_unit_rows_and_their_norms():
    """Bugs in _split_direction: norms clamped at about 1 instead of 1e-12 (rows shorter than 1 get wrong norms and
    non-unit directions), multiplying by the norms instead of dividing."""
    vectors = torch.tensor([[0.3, 0.4], [3.0, -4.0], [0.0, 0.0], [1e-3, 0.0]], dtype=torch.float64)
    omega, norms = _split_direction(vectors)
    assert torch.allclose(norms, torch.tensor([0.5, 5.0, 1e-12, 1e-3], dtype=torch.float64), rtol=1e-12, atol=0)
    expected = torch.tensor([[0.6, 0.8], [0.6, -0.8], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(omega, expected, rtol=0, atol=1e-12)

    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 2, 2)) * np.array([0.01, 0.1, 1.0, 10.0, 0.5])[:, None, None, None]
    omega, norms = _split_direction(torch.from_numpy(w))
    ref_norms = np.sqrt((w.reshape(5, -1) ** 2).sum(axis=1))
    np.testing.assert_allclose(norms.numpy(), ref_norms, rtol=1e-12)
    np.testing.assert_allclose(omega.numpy(), w / ref_norms[:, None, None, None], rtol=1e-12)
    np.testing.assert_allclose((omega * norms.view(-1, 1, 1, 1)).numpy(), w, rtol=1e-12)


def test_class_vectors_match_numpy():
    """Bug in _class_vectors: the embed_proj bias subtracted instead of added. Reference: numpy, float64."""
    rng = np.random.default_rng(1)
    embed, w, b = rng.standard_normal((7, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3) + 0.5
    disc = {'embed.weight': torch.from_numpy(embed), 'embed_proj.weight': torch.from_numpy(w),
            'embed_proj.bias': torch.from_numpy(b)}
    pre = embed[:5] @ (w / 2.0).T + b  # equalized lr: gain 1/sqrt(4) = 1/2
    ref = np.where(pre >= 0, pre, 0.2 * pre) * math.sqrt(2)
    out = _class_vectors(disc, 5)
    assert out.shape == (5, 3) and (pre < 0).any() and (pre > 0).any()
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-14)


# -- the generator's conversion: refusals, warnings, the report --------------------------------------------------------
def load_ema(tmp_path, tree, name: str = 'g.pkl'):
    return legacy.load(dump(tmp_path / name, {'G_ema': tree}), components=('G_ema',))


def ema_refusal(tmp_path, tree) -> str:
    return raised_message(legacy.load, dump(tmp_path / 'bad.pkl', {'G_ema': tree}), ('G_ema',), error=ConversionError)


def test_generator_refusals_have_the_full_message(tmp_path, stem):
    """Bugs: each message None or altered; the recorded or the rebuilt value shown wrongly; constructor arguments
    without the resolution let through (joined with "and")."""
    assert ema_refusal(tmp_path, persistent('MappingNetwork')) == (
        'G_ema is a training.networks_stylegan3_resetting.MappingNetwork (persistent), not a StyleGAN-XL generator')
    for kwargs in ({}, {'w_dim': 512}):   # none recorded, or not the resolution
        tree = upstream_generator(stem)
        tree.synthesis._init_kwargs = kwargs
        assert ema_refusal(tmp_path, tree) == ('G_ema.synthesis lacks its recorded constructor arguments '
                                               '(_init_kwargs); this is not a pickle written by StyleGAN-XL')
    tree = upstream_generator(stem)
    tree.synthesis.L1_36_128.in_cutoff = np.float64(99.0)
    rebuilt = stem.synthesis.L1_36_128.spec.in_cutoff
    assert ema_refusal(tmp_path, tree) == ('G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.'
                                           f'in_cutoff: recorded 99.0, rebuilt {rebuilt!r})')
    del tree.synthesis.L1_36_128.in_cutoff   # was a TypeError from float(None) before the layer split checked
    assert ema_refusal(tmp_path, tree) == ('G_ema.synthesis.L1_36_128.in_cutoff is not recorded; this is not a '
                                           'pickle written by StyleGAN-XL')
    tree = upstream_generator(stem)
    del tree.synthesis.L1_36_128.padding
    assert ema_refusal(tmp_path, tree) == ('G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.'
                                           'padding is not recorded)')
    tree = upstream_generator(stem)
    names = list(stem.synthesis.layer_names)
    tree.synthesis.layer_names = names[::-1]
    assert ema_refusal(tmp_path, tree) == (f'G_ema: cannot rebuild the recorded stem (layer names {names[::-1]} '
                                           f'recorded, {names} rebuilt)')
    tree = upstream_generator(stem)
    tree.mapping.num_ws = 99
    assert ema_refusal(tmp_path, tree) == f'G_ema.mapping.num_ws is 99, the rebuilt generator has {stem.num_ws}'


def test_generator_report_rewrites_class_rows_and_warns_of_what_it_does_not_take_over(tmp_path, stem):
    """Bugs: the row-cut or drop notes altered; unknown synthesis options or other conv_clamp values not warned."""
    tree = upstream_generator(stem)
    tree.synthesis._init_kwargs['style_mixing'] = 0.5
    tree.synthesis.L1_36_128.conv_clamp = None
    report = load_ema(tmp_path, tree).meta['reports']['G_ema']
    assert report['rewritten'] == ['mapping.embed.weight: first 10 of 1000 rows kept (labels index rows 0..9 only)']
    assert report['warnings'] == [
        f"recorded conv_clamp values ['256', 'None'] differ from ours ({stem.cfg.conv_clamp}); upstream gives "
        'superres heads conv_clamp=256 even for --fp32 stems',
        "recorded synthesis options not taken over: ['style_mixing']"]
    uncond = load_ema(tmp_path, upstream_generator(make_G((), c_dim=0, seed=7)), 'u.pkl').meta['reports']['G_ema']
    assert uncond['dropped'] == {'mapping.embed.weight': 'class embedding of an unconditional generator (upstream '
                                                         'loads it, never uses it)'}
    assert uncond['rewritten'] == [] and uncond['warnings'] == []


def test_a_superres_chain_that_does_not_factor_is_refused_with_the_full_message(tmp_path):
    """Bug: the message None or altered when no up-factor product gives the recorded resolution."""
    tree = upstream_generator(make_G(CHAIN[:1], seed=8))
    tree.img_resolution = 48
    assert ema_refusal(tmp_path, tree) == ('G_ema: no superres chain with head_layers [4] from 16px to 48px reproduces '
                                           'the recorded layers; tried nothing (the resolutions do not factor into 2, '
                                           '4, 8, 16)')


# -- the stem configuration from recorded constructor arguments --------------------------------------------------------
def stem_views(synthesis_kwargs: dict, mapping_kwargs: Optional[dict] = None, embed_dim: Optional[int] = None):
    """(mapping, synthesis) views of persistent records holding only the given _init_kwargs."""
    def persistent_record(name: str, kwargs: dict, modules: Optional[dict] = None) -> PersistentRecord:
        state = {'_init_kwargs': kwargs, '_modules': modules or {}, '_parameters': {}, '_buffers': {}}
        return PersistentRecord(name, state, 6, '', 'training.networks_stylegan3')
    modules = {}
    if embed_dim is not None:
        embed = record_class('torch.nn.modules.sparse', 'Embedding')()
        embed.state = {'_modules': {}, '_parameters': {'weight': torch.zeros(1000, embed_dim)}, '_buffers': {}}
        modules['embed'] = embed
    mapping = persistent_record('MappingNetwork', {'z_dim': 64, 'w_dim': 128, **(mapping_kwargs or {})}, modules)
    synthesis = persistent_record('SynthesisNetwork', {'img_resolution': 16, **synthesis_kwargs})
    return ModuleView(mapping, 'G.mapping'), ModuleView(synthesis, 'G.synthesis')


def test_stem_config_takes_upstreams_defaults_for_what_is_not_recorded():
    """Bugs: the defaults of conv_kernel, use_radial_filters, channel_base / channel_max, img_channels or the embed
    width altered or lost; the embedding looked up under another name."""
    cfg = _stem_config(*stem_views({}))
    assert (cfg.synthesis, cfg.conv_kernel, cfg.use_radial_filters) == ('stylegan3-t', None, None)
    assert (cfg.channel_base, cfg.channel_max, cfg.img_channels, cfg.embed_dim) == (16384, 256, 3, 320)
    assert (cfg.mapping_layers, cfg.mapping_lr_multiplier, cfg.c_dim) == (2, 0.01, 0)
    assert _stem_config(*stem_views({}, embed_dim=512)).embed_dim == 512


def test_stem_config_reads_what_is_recorded():
    """Bugs: recorded img_channels or the mapping's lr_multiplier looked up under another name."""
    cfg = _stem_config(*stem_views({'img_channels': 1, 'channel_base': 4096, 'channel_max': 128},
                                   {'lr_multiplier': 0.05, 'num_layers': 4, 'c_dim': 10}))
    assert (cfg.img_channels, cfg.channel_base, cfg.channel_max) == (1, 2048, 64)
    assert (cfg.mapping_lr_multiplier, cfg.mapping_layers, cfg.c_dim) == (0.05, 4, 10)


@pytest.mark.parametrize('kernel,radial,expect', [
    (1, True, ('stylegan3-r', None, None, 32768 // 4)), (3, True, ('stylegan3-t', None, True, 32768 // 2)),
    (1, False, ('stylegan3-t', 1, None, 32768 // 2)), (2, True, ('stylegan3-t', 2, True, 32768 // 2))],
    ids=['R', 'T radial', 'T kernel 1', 'T kernel 2'])
def test_stem_config_tells_R_from_T_by_kernel_and_radial_filters(kernel, radial, expect):
    """Bugs: conv_kernel looked up under another name; R recognised by another kernel (2) or named otherwise; the
    recorded radial flag dropped for T; R's kernel 1 reported as a non-default."""
    cfg = _stem_config(*stem_views({'conv_kernel': kernel, 'use_radial_filters': radial, 'channel_base': 32768}))
    assert (cfg.synthesis, cfg.conv_kernel, cfg.use_radial_filters, cfg.channel_base) == expect


def test_superres_head_layers_default_and_a_contradicting_up_factor(tmp_path):
    """Bugs: the head count of a superres stage without a recorded head_layers taken as one more or one less than its
    layers; a recorded up_factor not checked (a spelling that never matches)."""
    G = make_G(CHAIN[:1], seed=9)
    tree = upstream_generator(G)
    del tree._init_kwargs['head_layers']
    spec = legacy.read_generator_spec(dump(tmp_path / 'sr.pkl', {'G_ema': tree}))
    assert [(s['head_layers'], s['up_factor']) for s in spec['stages']] == [(4, 2)]
    tree._init_kwargs['up_factor'] = 4
    msg = raised_message(legacy.read_generator_spec, dump(tmp_path / 'sr4.pkl', {'G_ema': tree}), error=ConversionError)
    assert msg.startswith('G_ema: no superres chain with head_layers [4] from 16px to 32px reproduces the recorded '
                          'layers; tried nothing')

def test_stem_config_reads_the_mapping_widths_and_w_avg_beta():
    """Bugs: z_dim or w_dim not passed (our defaults come back); w_avg_beta not passed or looked up under another
    name (upstream's default 0.998 comes back), or its default altered."""
    cfg = _stem_config(*stem_views({}, {'z_dim': 32, 'w_avg_beta': 0.995}))
    assert (cfg.z_dim, cfg.w_dim, cfg.w_avg_beta) == (32, 128, 0.995)
    assert _stem_config(*stem_views({})).w_avg_beta == 0.998


@pytest.mark.parametrize('base,cmax,expect', [(32768, 1024, (8192, 256)), (32770, 1026, (8192.5, 256.5))],
                         ids=['whole', 'halves'])
def test_stem_config_keeps_channel_widths_whole_when_they_divide(base, cmax, expect):
    """Upstream passes R's widths multiplied by 4; ours divides them back. Bugs: a width that divides left a float
    (16384.0: the spec then records floats), one that does not rounded down to an int."""
    cfg = _stem_config(*stem_views({'conv_kernel': 1, 'use_radial_filters': True, 'channel_base': base,
                                    'channel_max': cmax}))
    assert (cfg.channel_base, cfg.channel_max) == expect
    assert [type(v) for v in (cfg.channel_base, cfg.channel_max)] == [type(v) for v in expect]


# -- comparing a rebuilt layer with the recorded one ------------------------------------------------------------------
def layer_refusal(tmp_path, stem, field: str, value) -> Optional[str]:
    """The refusal of a stem pickle whose first layer records ``value`` for ``field`` (None: it loads)."""
    tree = upstream_generator(stem)
    setattr(tree.synthesis.L1_36_128, field, value)
    try:
        load_ema(tmp_path, tree)
    except ConversionError as e:
        return str(e)
    return None


def test_recorded_sizes_are_compared_whole(tmp_path, stem):
    """Upstream records sizes as [w, h]; ours keeps one side of a square. Bugs: only the first (or second) entry
    compared; an empty recorded size matched by broadcasting; the recorded array shown as an array repr instead of a
    list."""
    assert layer_refusal(tmp_path, stem, 'in_size', np.array([36, 36])) is None
    assert layer_refusal(tmp_path, stem, 'in_size', np.array([], dtype=np.int64)) == (
        'G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.in_size: recorded [], rebuilt 36)')
    for size in ([36, 40], [40, 36]):
        assert layer_refusal(tmp_path, stem, 'in_size', np.array(size)) == (
            f'G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.in_size: recorded {size}, rebuilt 36)')


def test_recorded_paddings_are_compared_by_value_and_length(tmp_path, stem):
    """Bugs: a padding recorded as a tuple (not a list) refused or compared as a number; a shorter padding
    accepted."""
    padding = list(stem.synthesis.L1_36_128.padding)
    assert layer_refusal(tmp_path, stem, 'padding', tuple(np.int64(p) for p in padding)) is None
    assert layer_refusal(tmp_path, stem, 'padding', padding[:3]) == (
        f'G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.padding: recorded {padding[:3]}, '
        f'rebuilt {padding})')


@pytest.mark.parametrize('offset,refused', [(1e-12, False), (9e-9, True), (1.2e-5, True), (0.5, True)])
def test_recorded_floats_match_to_a_relative_1e_9(tmp_path, stem, offset, refused):
    """Both sides compute cutoffs in float64 from the same formulas: rounding passes, anything more is a different
    layer (the half width is 6, so 9e-9 is 1.5e-9 relative). Bugs: numpy's default tolerances (1e-5 relative, 1e-8
    absolute) or a tolerance of about 1."""
    in_half_width = stem.synthesis.L1_36_128.spec.in_half_width
    assert in_half_width == 6.0
    problem = layer_refusal(tmp_path, stem, 'in_half_width', np.float64(in_half_width + offset))
    assert (problem is not None) == refused


def test_a_recorded_field_that_is_not_a_number_is_named(tmp_path, stem):
    """Bug: a ValueError or TypeError from float() or numpy escaping instead of the conversion's own error naming the
    field (the cutoffs are read when the layers are split into stages, the sizes when each layer is compared)."""
    assert layer_refusal(tmp_path, stem, 'out_cutoff', 'wide') == (
        "G_ema.synthesis.L1_36_128.out_cutoff: recorded 'wide', not a number")
    assert layer_refusal(tmp_path, stem, 'in_size', ['wide']) == (
        "G_ema: cannot rebuild the recorded stem (G_ema.synthesis.L1_36_128.in_size: recorded ['wide'], not a "
        'number)')


# -- the superres chain ------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def chain_4_2():
    """A 16 -> 128 px chain upsampling 4x then 2x: (2, 4) is tried first and must fail."""
    return make_G((SuperresConfig(4, 4), SuperresConfig(3, 2)), seed=11)


def test_every_up_factor_product_is_tried_until_one_rebuilds_the_layers(tmp_path, chain_4_2):
    """Bug: the first product of up-factors taken without rebuilding it (a chain 4x then 2x loads as 2x then 4x)."""
    tree = upstream_generator(chain_4_2)
    del tree._init_kwargs['up_factor']
    spec = legacy.read_generator_spec(dump(tmp_path / 'c.pkl', {'G_ema': tree}))
    assert [(s['head_layers'], s['up_factor']) for s in spec['stages']] == [(4, 4), (3, 2)]


def test_a_chain_no_product_rebuilds_is_refused_listing_every_try(tmp_path, chain_4_2):
    """Bugs: a try recorded as None or without its problem; the tries joined by another separator."""
    tree = upstream_generator(chain_4_2)
    del tree._init_kwargs['up_factor']
    last = chain_4_2.synthesis.layer_names[-1]
    getattr(tree.synthesis, last).in_half_width = np.float64(99.0)
    msg = raised_message(legacy.read_generator_spec, dump(tmp_path / 'c.pkl', {'G_ema': tree}), error=ConversionError)
    head = 'G_ema: no superres chain with head_layers [4, 3] from 16px to 128px reproduces the recorded layers; tried '
    assert msg.startswith(head + 'up-factors (2, 4): ')
    rebuilt = getattr(chain_4_2.synthesis, last).spec.in_half_width
    assert msg.endswith(f'; up-factors (4, 2): G_ema.synthesis.{last}.in_half_width: recorded 99.0, rebuilt '
                        f'{rebuilt!r}')
    assert msg.count('; up-factors') == 1


def test_a_recorded_head_count_that_contradicts_the_layers_is_refused(tmp_path):
    """Bug: the recorded head_layers of the last stage ignored (looked up under another name) in favour of the count
    the layers suggest."""
    tree = upstream_generator(make_G(CHAIN[:1], seed=9))
    tree._init_kwargs['head_layers'] = 5
    msg = raised_message(legacy.read_generator_spec, dump(tmp_path / 'h.pkl', {'G_ema': tree}), error=ConversionError)
    assert msg.startswith('G_ema: no superres chain with head_layers [5] from 16px to 32px reproduces the recorded '
                          'layers; tried up-factors (2,): ')


def test_a_superres_generator_without_its_resolution_is_refused(tmp_path):
    """Bug: a missing img_resolution read as None (a TypeError) or as a number."""
    tree = upstream_generator(make_G(CHAIN[:1], seed=9))
    del tree.img_resolution
    assert ema_refusal(tmp_path, tree) == ('G_ema.img_resolution is not recorded; this is not a pickle written by '
                                           'StyleGAN-XL')


# -- renaming and the entry point --------------------------------------------------------------------------------------
def test_class_rows_are_cut_only_beyond_the_class_count():
    """Bugs: rows counted on the wrong axis (an embedding narrower than the class count is not cut); an embedding of
    exactly c_dim rows reported as cut."""
    cfg = GeneratorConfig(img_resolution=16, c_dim=10)
    report = ConversionReport('G')
    out = _rename({'mapping.embed.weight': torch.zeros(1000, 8)}, cfg, report)
    assert out['mapping.embed.weight'].shape == (10, 8) and len(report.rewritten) == 1
    report = ConversionReport('G')
    exact = torch.zeros(10, 320)
    assert _rename({'mapping.embed.weight': exact}, cfg, report)['mapping.embed.weight'] is exact
    assert report.rewritten == []


def test_convert_generator_defaults_to_the_name_G_and_strict_loading(tmp_path, stem):
    """Bugs: the default name altered (reports and errors name another network); strict=False by default (a tensor
    no rule maps passes)."""
    tree = upstream_generator(stem)
    tree.mapping.register_buffer('extra', torch.zeros(1))
    record = read_pickle(dump(tmp_path / 'x.pkl', {'G_ema': tree}))['G_ema']
    msg = raised_message(convert_generator, record, error=ConversionError)
    assert msg.startswith('G: tensors in the pickle that no rule maps: mapping.extra.')
    G, report = convert_generator(record, strict=False)
    assert report.component == 'G' and report.unexpected == ['mapping.extra'] and G.cfg == stem.cfg
