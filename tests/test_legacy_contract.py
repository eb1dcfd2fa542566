"""Contracts of san_ext.legacy that the broader legacy tests reach without pinning: the exact refusal messages of the
restricted reader (calls of references and rebuilt functions, ``torch.device`` arguments, ``NEWOBJ_EX`` keyword
arguments, dill's ``_create_array``), that ``NEWOBJ_EX`` without keywords and dill's ``_create_array`` build what
``NEWOBJ`` and numpy's own pickles build, :class:`ModuleView` (``find``, paths, the tensors it lists, its errors),
the text of :class:`ConversionReport` (summary, warnings and their log records, key listings) and the head
arithmetic of the discriminator conversion (``_split_direction``, ``_class_vectors``) checked against numpy in
float64. Each test names the planted bug it fails on.
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
from legacy_pickles import dump, fake_function  # tests/legacy_pickles.py: writers of upstream-format pickles

from san_ext.bench.pickle_fuzz import op_call, op_global, op_int, op_str, op_tuple
from san_ext.legacy import LegacyPickleError, RefusedError, read_pickle
from san_ext.legacy import unpickler as reader
from san_ext.legacy.convert import ConversionError, ConversionReport
from san_ext.legacy.discriminator import _class_vectors, _split_direction
from san_ext.legacy.records import ModuleView, Record, record_class

G, s = op_global, op_str


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


# -- ModuleView: reading recorded modules ------------------------------------------------------------------------------
def recorded(modules: Optional[dict] = None, params: Optional[dict] = None, buffers: Optional[dict] = None,
             **attrs) -> Record:
    out = record_class('pg_modules.blocks', 'Block')()
    out.state = {'_modules': modules or {}, '_parameters': params or {}, '_buffers': buffers or {}, **attrs}
    return out


def test_view_paths_join_with_dots_below_a_named_root():
    """Bugs: the child's path None, dropped, always joined (a leading '.') or never joined."""
    tree = recorded({'a': recorded({'b': recorded()})})
    assert ModuleView(tree).child('a').path == 'a' and ModuleView(tree).child('a').child('b').path == 'a.b'
    assert ModuleView(tree, 'D').child('a').child('b').path == 'D.a.b'


def test_tensors_leave_out_non_persistent_buffers_only():
    """Bugs: the non-persistent set looked up under another name, or replaced by an empty set ('and')."""
    w, kept, skipped = torch.ones(2), torch.zeros(1), torch.full((1,), 7.0)
    view = ModuleView(recorded(params={'w': w}, buffers={'kept': kept, 'skipped': skipped},
                               _non_persistent_buffers_set={'skipped'}))
    assert set(view.tensors()) == {'w', 'kept'}
    assert set(ModuleView(recorded(buffers={'kept': kept}, _non_persistent_buffers_set=set())).tensors()) == {'kept'}


@pytest.mark.parametrize('path,shown', [('', 'object'), ('D.x', 'D.x')])
def test_view_of_a_non_record_names_the_path_and_type(path, shown):
    """Bugs: the message None, '(path and "object")', the fallback word altered, or type(None) shown."""
    with pytest.raises(ConversionError) as err:
        ModuleView(5, path)
    assert str(err.value) == f'{shown} is a int, not a recorded module'


@pytest.mark.parametrize('path,shown', [('', 'module'), ('D', 'D')])
def test_view_errors_name_the_path_or_module(path, shown):
    """Bugs: the messages None, '(path and "module")', the fallback word altered, the listing's separator altered,
    type(None) shown, the tensor's path None."""
    view = ModuleView(recorded({'a': recorded(), 'b': recorded()}), path)
    with pytest.raises(ConversionError) as err:
        view.child('x')
    assert str(err.value) == f"{shown} has no submodule 'x' (has: a, b); not a StyleGAN-XL network"
    with pytest.raises(ConversionError) as err:
        ModuleView(recorded(_modules=5), path).children().__next__()
    assert str(err.value) == f'{shown}._modules is a int, not a dict'
    for where in ('params', 'buffers'):
        with pytest.raises(ConversionError) as err:
            ModuleView(recorded(**{where: {'w': 5}}), path).tensors()
        assert str(err.value) == f'{path}.w should be a tensor, got int'


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
