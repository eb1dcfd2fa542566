"""san_ext.legacy's restricted unpickler under attack: the allow-list pinned entry by entry, dangerous globals refused
with a sentinel that proves nothing ran, attribute access and state setting only on the reader's inert records, and
the opcodes that would act on anything (BUILD, NEWOBJ, the container fills, extension codes) held to what they are for.

Sentinels: a file the payload would create (or a canary it would delete), a sentinel module whose import writes that
file, the Python audit events raised during the read (exec, compile, import, processes, sockets, other files:
``san_ext.bench.pickle_oracle.audit_events``) and ``sys.modules`` (naming a module must not import it). Where running
the payload is harmless, the same bytes are first shown to fire the sentinel under the standard unpickler. The
payloads are in tests/legacy_payloads.py.
"""

from __future__ import annotations

import io
import pickle
import sys
from contextlib import nullcontext

import pytest
import torch
from legacy_payloads import CASES, STYLED, Env, case_id, fired, make_env, resolved, write  # tests/legacy_payloads.py

from san_ext.bench.pickle_fuzz import op_bytes, op_call, op_global, op_int, op_str, op_tuple, storage_bytes
from san_ext.bench.pickle_oracle import audit_events
from san_ext.legacy import RefusedError, RefusedGlobalError, read_pickle
from san_ext.legacy.records import AttrRecord, Record
from san_ext.legacy.unpickler import _Unpickler, allowed_globals

s, G = op_str, op_global
# Every global the reader resolves by default, written out: adding one to san_ext/legacy must change this list too.
PINNED_TEXT = {
    '_codecs': 'encode',
    'builtins': 'complex dict frozenset getattr object set setattr slice',
    'collections': 'OrderedDict',
    'copyreg': '__newobj__ _reconstructor',
    'dill': '_dill',
    'dill._dill': '_create_array _create_cell _create_code _create_function _get_attr _import_module _load_type '
                  '_setattr',
    'dill._shims': '_create_array _create_cell _create_code _create_function _get_attr _import_module _load_type '
                   '_setattr',
    'dnnlib': 'EasyDict',
    'dnnlib.util': 'EasyDict',
    'feature_networks.pretrained_builder': '__dict__',
    'feature_networks.vit': 'AddReadout ProjectReadout Slice Transpose __dict__ _resize_pos_embed forward_flex '
                            'forward_vit get_activation',
    'numpy': 'dtype ndarray',
    'numpy._core._multiarray_umath': '_reconstruct scalar',
    'numpy._core.multiarray': '_reconstruct scalar',
    'numpy.core._multiarray_umath': '_reconstruct scalar',
    'numpy.core.multiarray': '_reconstruct scalar',
    'pg_modules.blocks': 'DownBlock DownBlockPatch FeatureFusionBlock GLU Interpolate ResidualConvUnit Swish __dict__',
    'pg_modules.discriminator': 'MultiScaleD ProjectedDiscriminator SingleDisc SingleDiscCond __dict__',
    'pg_modules.projector': 'F_Identity F_RandomProj __dict__',
    'pg_modules.san_modules': 'SANConv1d SANConv2d SANEmbedding SANLinear',
    'timm.layers.adaptive_avgmax_pool': 'SelectAdaptivePool2d',
    'timm.layers.conv2d_same': 'Conv2dSame',
    'timm.layers.drop': 'DropPath',
    'timm.layers.layer_scale': 'LayerScale',
    'timm.layers.linear': 'Linear',
    'timm.layers.mlp': 'Mlp',
    'timm.layers.norm_act': 'BatchNormAct2d',
    'timm.layers.padding': 'Pad2dSame',
    'timm.layers.patch_embed': 'PatchEmbed',
    'timm.models._efficientnet_blocks': 'CondConvResidual ConvBnAct DepthwiseSeparableConv EdgeResidual '
                                        'InvertedResidual SqueezeExcite',
    'timm.models.deit': 'VisionTransformerDistilled',
    'timm.models.efficientnet': 'EfficientNet EfficientNetFeatures',
    'timm.models.efficientnet_blocks': 'CondConvResidual ConvBnAct DepthwiseSeparableConv EdgeResidual '
                                       'InvertedResidual SqueezeExcite',
    'timm.models.layers.activations': 'GELU HardSigmoid HardSwish Sigmoid Swish Tanh',
    'timm.models.layers.adaptive_avgmax_pool': 'SelectAdaptivePool2d',
    'timm.models.layers.conv2d_same': 'Conv2dSame',
    'timm.models.layers.drop': 'DropPath',
    'timm.models.layers.linear': 'Linear',
    'timm.models.layers.mlp': 'Mlp',
    'timm.models.layers.norm_act': 'BatchNormAct2d',
    'timm.models.layers.padding': 'Pad2dSame',
    'timm.models.layers.patch_embed': 'PatchEmbed',
    'timm.models.layers.squeeze_excite': 'SEModule SqueezeExcite',
    'timm.models.vision_transformer': 'Attention Block LayerScale VisionTransformer VisionTransformerDistilled',
    'torch': 'Size bfloat16 bool complex128 complex64 device double float float16 float32 float64 half int int16 '
             'int32 int64 int8 long short uint8',
    'torch._utils': '_rebuild_parameter _rebuild_parameter_with_state _rebuild_tensor _rebuild_tensor_v2',
    'torch.ao.nn.quantized.modules.functional_modules': 'FloatFunctional',
    'torch.nn.functional': 'interpolate',
    'torch.nn.modules.module': '_WrappedHook',
    'torch.nn.quantized.modules.functional_modules': 'FloatFunctional',
    'torch.nn.utils.spectral_norm': 'SpectralNorm SpectralNormLoadStateDictPreHook SpectralNormStateDictHook',
    'torch.storage': '_load_from_bytes',
    'torch_utils.persistence': '_reconstruct_persistent_obj',
}
PINNED = frozenset((m, n) for m, names in PINNED_TEXT.items() for n in names.split())
# Real objects the reader may hand out as they are: data types and dtypes that run nothing from the file.
REAL_OK = {object, dict, set, frozenset, slice, complex, __import__('collections').OrderedDict, torch.Size,
           *(getattr(torch, n) for n in PINNED_TEXT['torch'].split() if n not in ('Size', 'device'))}


def find_class(module: str, name: str):
    """What the reader's ``find_class`` gives for ``module.name`` (or the RefusedGlobalError it raises)."""
    return _Unpickler(io.BytesIO(), '<probe>').find_class(module, name)


def is_torch_nn_module_class(module: str, name: str) -> bool:
    obj = vars(torch.nn).get(name)
    return (module.startswith('torch.nn.modules.') and not name.startswith('_') and isinstance(obj, type)
            and issubclass(obj, torch.nn.Module))


# -- the allow-list, pinned ------------------------------------------------------------------------------------------
def test_allowed_globals_are_exactly_the_pinned_list():
    assert allowed_globals() - PINNED == set(), 'new entries: pin them here on purpose'
    assert PINNED - allowed_globals() == set()


def test_find_class_accepts_exactly_the_pinned_globals_and_torch_nn_module_classes():
    """Every pinned module with every pinned name (and dangerous, dotted and near-miss names): accepted exactly when
    pinned, or a public torch.nn module class under torch.nn.modules.*; so a special case added to find_class shows."""
    modules = {m for m, _ in PINNED} | {'builtins', 'os', 'torch.nn', 'torch.nn.modules', 'torch', 'san_ext.legacy'}
    names = {n for _, n in PINNED} | {'eval', 'exec', 'system', 'Module', 'Conv2d', 'Parameter', 'functional',
                                      'getattr.__self__', 'OrderedDict.__class__', '_ConvNd', 'load', 'read_pickle'}
    accepted, expected = set(), set()
    for module in modules | {m + 'x' for m in modules} | {'torch.nn.modules.conv'}:
        for name in names:
            if (module, name) in PINNED or is_torch_nn_module_class(module, name):
                expected.add((module, name))
            try:
                find_class(module, name)
                accepted.add((module, name))
            except RefusedGlobalError:
                pass
    assert accepted == expected


@pytest.mark.parametrize('module,name', sorted(PINNED))
def test_every_allowed_global_is_a_stand_in_not_the_real_thing(module, name):
    obj = find_class(module, name)
    if obj in REAL_OK if isinstance(obj, (type, torch.dtype)) else False:
        return
    own = (isinstance(obj, Record) or (isinstance(obj, type) and issubclass(obj, Record))
           or getattr(getattr(obj, '__func__', obj), '__module__', '').startswith('san_ext.legacy')
           or type(obj).__name__ == 'object')
    assert own, f'{module}.{name} resolves to {obj!r}, which is not one of the reader\'s stand-ins'


def test_python2_names_map_to_the_same_stand_ins():
    assert type(find_class('copy_reg', '_reconstructor')) is type(find_class('copyreg', '_reconstructor'))
    assert find_class('__builtin__', 'set') is set
    with pytest.raises(RefusedGlobalError, match=r'builtins\.eval'):
        find_class('__builtin__', 'eval')


# -- torch.nn class names ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('module,name', [('torch.nn.modules.conv', 'Conv2d'), ('torch.nn.modules.linear', 'Linear'),
                                         ('torch.nn.modules.container', 'Sequential'),
                                         ('torch.nn.modules.module', 'Module')])
def test_torch_nn_classes_under_torch_nn_modules_become_records(tmp_path, module, name):
    cls = find_class(module, name)
    assert isinstance(cls, type) and issubclass(cls, Record) and cls.qualname.fget is not None
    # Built with absurd sizes it stays a record: no weights are allocated, no torch code runs.
    path = write(tmp_path, op_call(op_global(module, name), [op_int(10 ** 9), op_int(10 ** 9)]) + b'.')
    obj = read_pickle(path)
    assert isinstance(obj, Record) and not isinstance(obj, torch.nn.Module) and obj.qualname == f'{module}.{name}'


@pytest.mark.parametrize('module,name', [('torch.nn', 'Conv2d'), ('torch.nn', 'Module'), ('torch', 'nn.Linear'),
                                         ('torch.nn.modules', 'Conv2d'), ('torch.nn.modulesx.conv', 'Conv2d'),
                                         ('torch.nn.functional', 'Conv2d'), ('torch.nn.parallel', 'DataParallel'),
                                         ('torch.nn.modules.conv', '_ConvNd'), ('torch.nn.modules.x', 'Parameter'),
                                         ('torch.nn.modules.x', 'functional'), ('torch.nn.modules.x', 'init'),
                                         ('torch.nn.modules.conv', 'Conv2d.__init__'), ('torch.jit', 'ScriptModule')])
def test_torch_nn_names_elsewhere_are_refused(module, name):
    with pytest.raises(RefusedGlobalError, match=f'global {module}.{name},'):
        find_class(module, name)


# -- dangerous globals, each with a sentinel ---------------------------------------------------------------------------
@pytest.fixture
def env(tmp_path, monkeypatch) -> Env:
    monkeypatch.syspath_prepend(str(tmp_path))  # where the sentinel module lives
    return make_env(tmp_path)


@pytest.mark.parametrize('case,style', STYLED, ids=[f'{case_id(c)}-{st}' for c, st in STYLED])
def test_dangerous_global_is_refused_and_nothing_runs(tmp_path, env, case, style):
    case = resolved(case, env)
    path = write(tmp_path, case.payload(env, style))
    top = case.module.split('.')[0]
    was_imported = top in sys.modules
    with audit_events(path) as events, pytest.raises(RefusedGlobalError) as err:
        read_pickle(path)
    module = {'__builtin__': 'builtins'}.get(case.module, case.module)
    assert f'global {module}.{case.name},' in str(err.value) and str(path) in str(err.value)
    assert events == [] and not fired(case, env, events)
    assert was_imported or top not in sys.modules, f'reading the pickle imported {top}'


@pytest.mark.parametrize('case', [c for c in CASES if c.control], ids=case_id)
def test_the_same_payload_fires_its_sentinel_under_the_standard_unpickler(tmp_path, env, case):
    """The control: each refused payload above is live, so its sentinel staying quiet means something."""
    case = resolved(case, env)
    data = case.payload(env, 'GLOBAL')
    watch = case.sentinel.startswith('event:')  # files are left alone: the watch would block writing them
    with audit_events(tmp_path / 'none') if watch else nullcontext([]) as events:
        try:
            case.finish(pickle.loads(data))
        except Exception:  # noqa: BLE001 (several payloads fail after doing their deed)
            pass
    assert fired(case, env, events), f'{case_id(case)}: the sentinel did not fire under pickle.loads'


# -- attribute access and state: only on the reader's records ----------------------------------------------------------
_STORAGE = op_call(G('torch.storage', '_load_from_bytes'), [op_bytes(storage_bytes())])
_TENSOR = op_call(G('torch._utils', '_rebuild_tensor_v2'), [_STORAGE, op_int(0), op_tuple([op_int(2)]),
                                                            op_tuple([op_int(1)]), b'\x89', b'}'])
_DTYPE = op_call(G('numpy', 'dtype'), [s('f8'), b'\x89', b'\x88']) + op_tuple(
    [op_int(3), s('<'), b'N', b'N', b'N', op_int(-1), op_int(-1), op_int(0)]) + b'b'
_ARRAY = op_call(G('numpy.core.multiarray', '_reconstruct'), [G('numpy', 'ndarray'), op_tuple([op_int(0)]),
                                                             op_bytes(b'b')]) + op_tuple(
    [op_int(1), op_tuple([op_int(2)]), _DTYPE, b'\x89', op_bytes(bytes(16))]) + b'b'
_RECORD = op_call(G('pg_modules.blocks', 'DownBlock'), [])
OBJECTS = {  # what a pickle can build, data and the reader's own objects
    'dict': b'}', 'list': b']', 'str': s('x'), 'int': op_int(7), 'bytes': op_bytes(b'x'), 'tuple': b')',
    'set': b'\x8f', 'OrderedDict': op_call(G('collections', 'OrderedDict'), []),
    'EasyDict': op_call(G('dnnlib.util', 'EasyDict'), []), 'tensor': _TENSOR, 'storage': _STORAGE, 'ndarray': _ARRAY,
    'dtype': _DTYPE, 'Size': op_call(G('torch', 'Size'), [op_tuple([op_int(2)])]),
    'device': op_call(G('torch', 'device'), [s('cpu')]), 'torch.float32': G('torch', 'float32'),
    'object()': op_call(G('builtins', 'object'), []), 'constructor': G('torch._utils', '_rebuild_tensor_v2'),
    'getattr': G('builtins', 'getattr'), 'OrderedDict class': G('collections', 'OrderedDict'),
    'record class': G('pg_modules.blocks', 'DownBlock'), 'EasyDict class': G('dnnlib.util', 'EasyDict'),
}
GETTERS = {'builtins.getattr': G('builtins', 'getattr'), 'dill._get_attr': G('dill._dill', '_get_attr')}


@pytest.mark.parametrize('getter', GETTERS)
@pytest.mark.parametrize('what', OBJECTS)
def test_reading_an_attribute_of_anything_but_a_record_is_refused(tmp_path, env, getter, what):
    attr = 'tofile' if what == 'ndarray' else '__class__'
    data = op_call(op_call(GETTERS[getter], [OBJECTS[what], s(attr)]), [s(str(env.target))]) + b'.'
    path = write(tmp_path, data)
    with audit_events(path) as events, pytest.raises(RefusedError, match=f"reads attribute '{attr}' of a"):
        read_pickle(path)
    assert events == [] and not env.target.exists()


def test_ndarray_tofile_payload_writes_its_file_under_the_standard_unpickler(env):
    pickle.loads(op_call(op_call(G('builtins', 'getattr'), [_ARRAY, s('tofile')]), [s(str(env.target))]) + b'.')
    assert env.target.exists()  # the control of the ndarray case above


def test_attributes_of_records_stay_descriptions_and_cannot_be_called(tmp_path):
    attr = op_call(G('builtins', 'getattr'), [_RECORD, s('forward')])
    out = read_pickle(write(tmp_path, attr + b'.'))
    assert isinstance(out, AttrRecord) and out.class_name == 'forward' and out.owner.qualname.endswith('DownBlock')
    with pytest.raises(RefusedError, match="calls the attribute 'forward'"):
        read_pickle(write(tmp_path, op_call(attr, [op_int(1)]) + b'.'))


@pytest.mark.parametrize('what', ['tensor', 'storage', 'constructor', 'getattr', 'record class', 'EasyDict class',
                                  'OrderedDict class', 'object()', 'Size', 'device', 'set'])
@pytest.mark.parametrize('state', ['dict', 'slots'])
def test_setting_state_on_anything_but_a_record_is_refused(tmp_path, what, state):
    """BUILD: the stock unpickler calls ``__setstate__`` (a tensor's resets its storage) or writes ``__dict__`` (of
    the reader's functions, shared by every later read) on whatever it is given."""
    values = op_dict_1(s('weight'), op_int(1))
    data = OBJECTS[what] + (values if state == 'dict' else op_tuple([b'N', values])) + b'b.'
    with pytest.raises(RefusedError, match=r'sets the state \(BUILD\) of a'):
        read_pickle(write(tmp_path, data))
    from san_ext.legacy import unpickler
    # the payload's key, not an empty __dict__: a wrapper (functools.wraps, mutmut's trampoline) adds __wrapped__
    assert 'weight' not in vars(unpickler._rebuild_tensor) and 'weight' not in vars(unpickler._Unpickler._getattr)


def op_dict_1(key: bytes, value: bytes) -> bytes:
    return b'}' + key + value + b's'


def test_tensor_state_cannot_swap_its_storage(tmp_path):
    big = op_tuple([_STORAGE, op_int(0), op_tuple([op_int(10 ** 6)]), op_tuple([op_int(1)])])
    with pytest.raises(RefusedError, match=r'BUILD\) of a Tensor'):
        read_pickle(write(tmp_path, _TENSOR + big + b'b.'))


def test_state_on_records_arrays_and_dicts_is_kept(tmp_path):
    items = op_dict_1(s('a'), op_int(1))
    data = b'(' + b''.join([_RECORD + items + b'b', _ARRAY, op_call(G('dnnlib.util', 'EasyDict'), []) + items + b'b',
                            op_call(G('collections', 'OrderedDict'), []) + items + b'b']) + b't.'
    record, array, easy, od = read_pickle(write(tmp_path, data))
    assert record.state == {'a': 1} and array.tolist() == [0.0, 0.0] and easy == {'a': 1} and od.a == 1


@pytest.mark.parametrize('target', ['OrderedDict', 'tensor', 'ndarray', 'constructor'])
@pytest.mark.parametrize('setter', ['builtins.setattr', 'dill._dill._setattr'])
def test_setattr_on_anything_but_a_record_is_refused(tmp_path, target, setter):
    data = op_call(G(*setter.rsplit('.', 1)), [OBJECTS[target], s('x'), op_int(1)]) + b'.'
    with pytest.raises(RefusedError, match="sets attribute 'x' of a"):
        read_pickle(write(tmp_path, data))


CONTAINER_OPS = {
    'SETITEMS on a tensor': (_TENSOR + b'(' + op_int(0) + op_int(5) + b'u.', 'SETITEMS'),
    'SETITEM on a tensor': (_TENSOR + op_int(0) + op_int(5) + b's.', 'SETITEM'),
    'SETITEM on a record': (_RECORD + op_int(0) + op_int(5) + b's.', 'SETITEM'),
    'ADDITEMS on a tensor': (_TENSOR + b'(' + op_int(1) + b'\x90.', 'ADDITEMS'),
    'APPENDS on a bytearray': (b'\x80\x05\x96' + (1).to_bytes(8, 'little') + b'x(' + op_int(1) + b'e.', 'APPENDS'),
    'APPEND on an array': (_ARRAY + op_int(1) + b'a.', 'APPEND')}


@pytest.mark.parametrize('data,op', CONTAINER_OPS.values(), ids=CONTAINER_OPS)
def test_container_opcodes_fill_only_containers(tmp_path, data, op):
    """The stock SETITEM(S) / APPEND(S) / ADDITEMS call ``__setitem__``, ``extend``, ``append`` or ``add`` on
    whatever is on the stack (``tensor.add`` computes, ``tensor[0] = 5`` writes)."""
    with pytest.raises(RefusedError, match=f'{op} on a'):
        read_pickle(write(tmp_path, data))


@pytest.mark.parametrize('cls', ['Size', 'dict', 'set', 'object()', 'constructor'])
def test_newobj_builds_only_allow_listed_classes(tmp_path, cls):
    target = {'Size': G('torch', 'Size'), 'dict': G('builtins', 'dict'), 'set': G('builtins', 'set'),
              'object()': G('builtins', 'object'), 'constructor': G('torch', 'device')}[cls]
    with pytest.raises(RefusedError, match=r'copyreg.__newobj__ on'):
        read_pickle(write(tmp_path, b'\x80\x02' + target + op_tuple([]) + b'\x81.'))
    assert isinstance(read_pickle(write(tmp_path, b'\x80\x02' + G('pg_modules.blocks', 'DownBlock') + b')\x81.')),
                      Record)


@pytest.mark.parametrize('op', [b'\x82\x01', b'\x83\x01\x00', b'\x84\x01\x00\x00\x00'])
def test_extension_codes_are_refused(tmp_path, op):
    """EXT1/2/4 look names up in copyreg's process-wide registry and cache what find_class returns there."""
    with pytest.raises(RefusedError, match='extension code'):
        read_pickle(write(tmp_path, b'\x80\x02' + op + b'.'))


# -- the training metadata copied into the converted record --------------------------------------------------------
def test_metadata_copy_is_bounded_and_handles_arrays():
    import numpy as np

    from san_ext.legacy import LegacyPickleError, _plain

    assert _plain({'a': np.arange(3), 'b': np.float32(2.5), 'c': torch.ones(2), 'd': (1, 'x')}) == \
        {'a': [0, 1, 2], 'b': 2.5, 'c': [1.0, 1.0], 'd': [1, 'x']}  # a multi-element array used to raise ValueError
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(LegacyPickleError, match='x.pkl: its training metadata is too large or too deeply nested'):
        _plain(deep, 'x.pkl')  # no RecursionError
    shared: list = [0]
    for _ in range(40):
        shared = [shared, shared]  # 40 shared levels: 2**40 paths from a few hundred bytes of pickle
    with pytest.raises(LegacyPickleError, match='too large'):
        _plain(shared, 'x.pkl')  # refused at once, not copied for hours
    with pytest.raises(LegacyPickleError, match='too large'):
        _plain({'big': np.zeros(200_000)}, 'x.pkl')
