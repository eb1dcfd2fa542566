"""Contracts of the restricted pickle reader (san_ext.legacy.unpickler, .records) that the safety and fuzz tests reach
without pinning, written against the survivors of a mutation run (``python -m san_ext.bench.mutation``): the exact
text of every refusal (a message is the user's only clue to what the file asked for), what the checked constructors
accept (``_codecs.encode`` with either spelling of latin-1, ``copyreg._reconstructor`` of records and EasyDicts with
and without state), what ``BYTEARRAY8`` and ``APPEND`` build, and the descriptions dill's helpers and ``getattr``
leave behind. Each test names the planted bug it fails on.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from legacy_payloads import refused_message, write  # tests/legacy_payloads.py
from messages import raised_message  # tests/messages.py

from san_ext.bench.pickle_fuzz import op_bytes, op_call, op_global, op_int, op_str, op_tuple
from san_ext.legacy import LegacyPickleError, RefusedError, RefusedGlobalError, read_pickle
from san_ext.legacy import unpickler as reader
from san_ext.legacy.records import AttrRecord, CallRecord, ModuleRef, PersistentRecord, Record, record_class

G = op_global


def reader_for(path: str = 'x.pkl') -> reader._Unpickler:
    return reader._Unpickler(io.BytesIO(), path)


# -- refused globals and extension codes -------------------------------------------------------------------------------
def test_refused_global_message_names_the_global_the_file_and_the_way_out(tmp_path):
    """Bug: the allow-list sentence of RefusedGlobalError altered ('XX...XX', upper or lower case)."""
    path = tmp_path / 'evil.pkl'
    msg = refused_message(path, op_call(G('os', 'system'), [op_str('true')]) + b'.', RefusedGlobalError)
    assert msg == (f'{path}: refused for safety: the pickle names the global os.system, which is not on the allow-list '
                   'of StyleGAN-XL / StyleSAN-XL classes (san_ext/legacy/allowlist.py). Nothing from the file was run '
                   "or imported. If this is a genuine upstream pickle with a class we do not know, pass "
                   "extra_classes=[('os', 'system')] to read it as an inert record.")
    err = RefusedGlobalError('os', 'system', str(path))
    assert (err.module, err.name, err.path) == ('os', 'system', str(path))


@pytest.mark.parametrize('op', [b'\x82\x01', b'\x83\x01\x00', b'\x84\x01\x00\x00\x00'], ids=['EXT1', 'EXT2', 'EXT4'])
def test_extension_codes_are_refused_with_the_full_message(tmp_path, op):
    """Bug: the extension-code refusal's text altered."""
    path = tmp_path / 'ext.pkl'
    msg = refused_message(path, b'\x80\x02' + op + b'.', RefusedError)
    assert msg == (f"{path}: refused for safety: the pickle uses an extension code (EXT1/2/4, names looked up in "
                   "copyreg's process-wide registry); upstream pickles use none")


# -- bounded repr for messages -----------------------------------------------------------------------------------------
def test_short_falls_back_to_the_type_name_when_repr_fails():
    """Bug: the fallback shows type(None) ('<NoneType>') instead of the object's type. reprlib dispatches on the type's
    name, so a non-iterable object of a class called 'list' makes it raise."""
    impostor = type('list', (), {})()
    with pytest.raises(TypeError):
        reader._REPR.repr(impostor)
    assert reader._short(impostor) == '<list>'
    assert reader._short([1, 'a']) == "[1, 'a']"


# -- _codecs.encode ----------------------------------------------------------------------------------------------------
def test_latin1_accepts_both_spellings_and_defaults_to_latin1():
    """Bugs: the default encoding or the accepted 'latin-1' spelling altered (genuine protocol-2 bytes refused)."""
    assert reader._latin1('ab\xff') == b'ab\xff'
    assert reader._latin1('ab\xff', 'latin1') == reader._latin1('ab\xff', 'latin-1') == b'ab\xff'


@pytest.mark.parametrize('text,encoding,shown', [('abc', 'utf-8', "'utf-8'"), (7, 'latin1', "'latin1'"),
                                                 (b'abc', 'latin-1', "'latin-1'")], ids=['utf8', 'int', 'bytes'])
def test_latin1_refuses_other_encodings_and_non_text_with_the_full_message(text, encoding, shown):
    """Bugs: the two checks joined with 'and' (an int reaches str.encode and fails with AttributeError); the message
    None, altered, or showing None for the encoding."""
    with pytest.raises(LegacyPickleError) as err:
        reader._latin1(text, encoding)
    assert type(err.value) is LegacyPickleError
    assert str(err.value) == f'_codecs.encode is allowed for latin1 text only (pickled bytes), not {shown}'


def test_protocol2_bytes_come_back_through_codecs_encode(tmp_path):
    """pickle protocol 2 writes bytes as ``_codecs.encode('...', 'latin1')``: the reader gives the same bytes."""
    data = bytes(range(256))
    assert read_pickle(write(tmp_path, pickle.dumps(data, protocol=2))) == data


# -- BYTEARRAY8 and APPEND ---------------------------------------------------------------------------------------------
def test_bytearray8_and_append_build_what_pickle_builds(tmp_path):
    """Bugs: BYTEARRAY8 pushing None, APPEND appending None."""
    value = [bytearray(b'\x00ab\xff')]
    data = pickle.dumps(value, protocol=5)
    assert {'BYTEARRAY8', 'APPEND'} <= {op.name for op, _, _ in pickletools.genops(data)}
    out = read_pickle(write(tmp_path, data))
    assert out == value and type(out[0]) is bytearray


def test_bytearray8_length_past_the_end_is_reported_unsigned(tmp_path):
    """Bug: the length read as signed ('<q'): 2**63 + 5 becomes negative, read(-n) reads the rest of the file and
    the message shows a negative size."""
    n = 2 ** 63 + 5
    path = tmp_path / 'long.pkl'
    msg = refused_message(path, b'\x80\x05\x96' + struct.pack('<Q', n) + b'abc.', LegacyPickleError)
    assert msg == f'{path}: a {n}-byte array runs past the end of the file (truncated?)'


# -- copyreg._reconstructor --------------------------------------------------------------------------------------------
def test_reconstructor_builds_records_and_easydicts_with_and_without_state():
    """Bugs: the dict-state check joined with 'or' (EasyDict with base object or with state None calls
    update(None))."""
    r = reader_for()
    easydict, cls = r._easydict, record_class('pg_modules.blocks', 'DownBlock')
    for base in (object, dict):
        out = r._reconstructor(easydict, base, None)
        assert type(out) is easydict and out == {}
    assert r._reconstructor(easydict, dict, {'a': 1}) == {'a': 1}
    assert r._reconstructor(easydict, object, {'a': 1}) == {}   # base object: the state is set later by BUILD
    rec = r._reconstructor(cls, dict, {'a': 1})
    assert type(rec) is cls and rec.state is None


@pytest.mark.parametrize('cls,base,shown', [
    (5, object, '5, <class \'object\'>'),
    ('record', set, "<class 'san_ext.legacy.recor...g_modules.blocks.DownBlock]'>, <class 'set'>"),
    (dict, dict, "<class 'dict'>, <class 'dict'>")], ids=['not a class', 'bad base', 'plain dict'])
def test_reconstructor_refuses_anything_else_with_the_full_message(cls, base, shown):
    """Bugs: 'isinstance(cls, type) or ...' (a non-class reaches issubclass and fails with TypeError); the base check
    joined with 'and' (a record on any base passes); the message None or showing None. Long reprs are cut
    (reprlib, 60 characters)."""
    r = reader_for('r.pkl')
    if cls == 'record':
        cls = record_class('pg_modules.blocks', 'DownBlock')
    with pytest.raises(RefusedError) as err:
        r._reconstructor(cls, base)
    assert str(err.value) == (f'r.pkl: refused for safety: copyreg._reconstructor({shown}) builds something other '
                              'than an allow-listed class')


# -- getattr, setattr and dill's helpers -------------------------------------------------------------------------------
def test_getattr_describes_records_resolves_modules_and_refuses_the_rest():
    """Bugs: the non-string-name message None or showing None; the refusal naming type(None)."""
    r = reader_for('g.pkl')
    rec = record_class('pg_modules.blocks', 'DownBlock')()
    attr = r._getattr(rec, 'forward')
    assert type(attr) is AttrRecord and attr.owner is rec and attr.qualname == 'getattr.forward'
    with pytest.raises(RefusedGlobalError):
        r._getattr(ModuleRef('os'), 'system')
    with pytest.raises(LegacyPickleError) as err:
        r._getattr(rec, 5)
    assert str(err.value) == 'g.pkl: getattr with a non-string name 5'
    with pytest.raises(RefusedError) as err:
        r._getattr(3, 'real')
    assert str(err.value) == "g.pkl: refused for safety: the pickle reads attribute 'real' of a int object"


def test_setattr_keeps_values_on_rebuilt_functions_and_refuses_the_rest():
    """Bugs: the name check negated (every genuine setattr refused), the value stored as None, the message altered
    or naming type(None)."""
    call = CallRecord('dill._create_function', 1)
    reader._setattr(call, '__qualname__', 'f')
    assert call.attrs == {'__qualname__': 'f'}
    plain = Record()
    reader._setattr(plain, 'x', 1)   # other records: ignored
    assert not hasattr(plain, 'attrs') and plain.state is None
    for obj, name, shown in [(3, 'real', "'real'"), (plain, 5, '5')]:
        with pytest.raises(RefusedError) as err:
            reader._setattr(obj, name, 1)
        assert str(err.value) == (f'refused for safety: the pickle sets attribute {shown} of a {type(obj).__name__} '
                                  'object; only recorded objects take attributes from a pickle')


def test_dill_helpers_leave_descriptions_with_their_arguments():
    """Bugs: _load_type's name check altered (types become 'dill._load_type' calls), its factory returning None, the
    recorded name None or the arguments dropped; the generic helper dropping its arguments."""
    r = reader_for()
    code_type = r._dill_helper('_load_type')('CodeType')
    rec = code_type(1, 'co')
    assert type(rec) is CallRecord and rec.qualname == 'call.types.CodeType' and rec.args == (1, 'co')
    assert rec.attrs == {} and repr(rec) == '<record call.types.CodeType>'
    cell = r._dill_helper('_create_cell')(42)
    assert type(cell) is CallRecord and cell.qualname == 'call.dill._create_cell' and cell.args == (42,)
    module = r._dill_helper('_import_module')('timm.models')
    assert type(module) is ModuleRef and module.qualname == 'timm.models'


def test_attr_record_describes_the_lookup():
    """Bug: AttrRecord's recorded module name altered."""
    owner = record_class('pg_modules.blocks', 'DownBlock')()
    attr = AttrRecord(owner, 'forward')
    assert attr.qualname == 'getattr.forward' and attr.class_name == 'forward'
    assert repr(attr) == '<record getattr.forward>'


def test_calling_a_recorded_getattr_is_refused(tmp_path):
    """A pickle that calls getattr(record, name)(...) is refused with the attribute and owner named."""
    cls = G('pg_modules.blocks', 'DownBlock')
    looked_up = op_call(G('builtins', 'getattr'), [op_call(cls, []), op_str('forward')])
    path = tmp_path / 'call.pkl'
    msg = refused_message(path, op_call(looked_up, [op_int(1)]) + b'.', RefusedError)
    assert msg == (f"{path}: the pickle calls the attribute 'forward' of <record pg_modules.blocks.DownBlock>; "
                   'refused for safety')


def test_allowed_globals_do_not_depend_on_a_path():
    """allowed_globals() builds a throwaway reader; its table is the same as any reader's."""
    assert set(reader_for('any.pkl')._table) <= reader.allowed_globals()


# -- persistent-class records, numpy scalars, module hints -------------------------------------------------------------
def persistent_meta(**changes) -> dict:
    meta = {'type': 'class', 'class_name': 'Generator', 'state': {'a': 1}, 'module_src': 'class SynthesisBlock: ...'}
    meta.update(changes)
    return meta


def test_persistent_record_keeps_class_state_version_and_a_hash_of_the_source():
    """Bugs: the meta fields required as a strict superset ('<'); the version dropped or read under another key."""
    r = reader_for()
    rec = r._persistent(persistent_meta())
    assert (rec.class_name, rec.state, rec.version, rec.module_hint) == ('Generator', {'a': 1}, None,
                                                                         'training.networks_stylegan2')
    assert r._persistent(persistent_meta(version=6)).version == 6
    assert r._persistent(persistent_meta(version=6)).qualname == 'training.networks_stylegan2.Generator (persistent)'


def test_persistent_extra_classes_are_read_as_records():
    """Bug: the 'persistent' tag of extra_classes altered (a named extra class still refused)."""
    r = reader._Unpickler(io.BytesIO(), 'x.pkl', extra_classes=[('persistent', 'MyNet')])
    assert r._persistent(persistent_meta(class_name='MyNet')).class_name == 'MyNet'


@pytest.mark.parametrize('meta,message', [
    (5, 'x.pkl: a persistent-class record lacks its meta fields'),
    ({'type': 'class', 'class_name': 'G', 'state': {}}, 'x.pkl: a persistent-class record lacks its meta fields'),
    (persistent_meta(type='function'), "x.pkl: malformed persistent-class record 'Generator'"),
    (persistent_meta(class_name=5), 'x.pkl: malformed persistent-class record 5'),
    (persistent_meta(module_src=b'code'), "x.pkl: malformed persistent-class record 'Generator'")],
    ids=['not a dict', 'no source', 'not a class', 'class name not str', 'source not str'])
def test_malformed_persistent_records_are_refused_with_the_full_message(meta, message):
    """Bugs: the checks joined with 'and' (a non-dict reaches set(), other types pass), the messages None."""
    with pytest.raises(LegacyPickleError) as err:
        reader_for()._persistent(meta)
    assert type(err.value) is LegacyPickleError and str(err.value) == message


def test_unknown_persistent_class_is_refused_with_the_full_message():
    """Bug: the refusal's sentences altered."""
    with pytest.raises(RefusedError) as err:
        reader_for()._persistent(persistent_meta(class_name='Evil'))
    assert str(err.value) == ("x.pkl: refused for safety: the pickle holds a persistent object of class 'Evil' (with "
                              'its module source code embedded), which is not a known StyleGAN-XL class. The embedded '
                              "source was not run. Pass extra_classes=[('persistent', 'Evil')] to read it inertly.")


def test_numpy_scalars_need_a_dtype_and_exactly_its_bytes():
    """Bugs: the messages None or naming type(None); the byte check joined with 'and' (non-bytes reach len())."""
    f4 = np.dtype('<f4')
    assert reader._np_scalar(f4, struct.pack('<f', 1.5)) == np.float32(1.5)
    for dtype, data, message, in [('f4', b'abcd', 'a numpy scalar needs a dtype, got str'),
                                  (f4, b'abc', 'a numpy float32 scalar needs 4 bytes'),
                                  (f4, 5, 'a numpy float32 scalar needs 4 bytes')]:
        with pytest.raises(LegacyPickleError) as err:
            reader._np_scalar(dtype, data)
        assert str(err.value) == message


@pytest.mark.parametrize('src,hint', [
    ('class SuperresGenerator: ...', 'training.networks_stylegan3_resetting'),
    ('class SynthesisBlock: ...', 'training.networks_stylegan2'),
    ('filtered_lrelu\nclass SynthesisLayer: ...', 'training.networks_stylegan3'),
    ('filtered_lrelu only', 'unknown_module'), ('class SynthesisLayer: ...', 'unknown_module'),
    ('class AugmentPipe: ...', 'training.augment')])
def test_module_hint_of_each_upstream_source(src, hint):
    """Bugs: the StyleGAN3 test joined with 'or', its class name altered or negated."""
    assert reader._module_hint(src) == hint


# -- numpy arrays and dtypes as numpy pickles them; tensor layouts -----------------------------------------------------
def object_subarray() -> np.ndarray:
    out = np.empty(2, dtype=[('a', 'O', (2,)), ('b', 'u1')])
    out['a'], out['b'] = [[1, 'x'], [2, 'y']], [3, 4]
    return out


@pytest.mark.parametrize('array', [
    np.zeros(2, dtype=np.dtype([('a', 'u1'), ('b', '<f8')], align=True)), object_subarray(),
    np.array(['ab', 'c']), np.array([1, 'a', None], dtype=object)],
    ids=['aligned struct', 'object subarray field', 'unicode', 'object'])
def test_numpy_arrays_with_flagged_dtypes_come_back(tmp_path, array):
    """Bugs: the canonical dtype the flags are compared with built wrongly (None, no descr, not aligned, the plain
    or the subarray branch misused): genuine arrays whose dtypes carry flags (aligned structs, object and unicode
    items) would be refused as crafted."""
    out = read_pickle(write(tmp_path, pickle.dumps(array, protocol=2)))
    assert out.dtype == array.dtype and out.dtype.flags == array.dtype.flags and out.shape == array.shape
    assert repr(out) == repr(array)   # the items too (object items make == ambiguous)


def test_numpy_dtype_constructor_honours_align_and_refuses_non_strings():
    """Bugs: align=True by default or passed as None; the message None or naming type(None)."""
    assert reader._np_dtype('u1,f8').itemsize == 9 and reader._np_dtype('u1,f8', True).itemsize == 16
    with pytest.raises(LegacyPickleError) as err:
        reader._np_dtype(5)
    assert str(err.value) == 'a numpy dtype should be named by a string, got int'
    with pytest.raises(LegacyPickleError) as err:
        reader._np_reconstruct(5)
    assert str(err.value) == 'numpy _reconstruct may only build numpy.ndarray, got 5'


@pytest.mark.parametrize('tensor', [torch.zeros(0, 3), torch.arange(3.0).expand(2, 3)], ids=['empty', 'stride 0'])
def test_tensors_with_zero_sizes_or_strides_come_back(tmp_path, tensor):
    """Bug: sizes and strides required to be positive ('> 0', '>= 1'): empty and expanded tensors refused."""
    out = read_pickle(write(tmp_path, pickle.dumps(tensor, protocol=2)))
    assert out.shape == tensor.shape and out.stride() == tensor.stride() and torch.equal(out, tensor)


def test_bad_tensor_sizes_are_shown_in_the_message():
    """Bug: the offending values shown as None."""
    with pytest.raises(LegacyPickleError) as err:
        reader._check_ints((1, -1), 'size')
    assert str(err.value) == 'bad tensor size in the pickle: (1, -1)'


# -- tensor and parameter constructors ---------------------------------------------------------------------------------
def typed_storage(n: int = 6) -> torch.storage.TypedStorage:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return torch.arange(float(n)).storage()


def test_rebuild_tensor_accepts_views_that_end_on_the_last_element():
    """The bound is 'last index < numel': a view ending exactly on the storage's last element is fine."""
    out = reader._rebuild_tensor(typed_storage(), 0, (2, 3), (3, 1))
    assert torch.equal(out, torch.arange(6.0).reshape(2, 3))
    assert torch.equal(reader._rebuild_tensor(typed_storage(), 1, (5,), (1,)), torch.arange(1.0, 6.0))


@pytest.mark.parametrize('offset,size,stride', [(1, (6,), (1,)), (1, (2, 3), (3, 1)), (0, (7,), (1,))],
                         ids=['offset', 'strided', 'long'])
def test_rebuild_tensor_refuses_views_past_the_storage_with_the_full_message(offset, size, stride):
    """Bugs: the bound computed with '/' or 'n - 2', or '>' instead of '>=' (the view overruns by one element and
    torch's own error escapes); the message altered."""
    with pytest.raises(LegacyPickleError) as err:
        reader._rebuild_tensor(typed_storage(), offset, size, stride)
    assert str(err.value) == (f'a tensor of size {size} at offset {offset} overruns its storage of 6 elements; the '
                              'file is corrupt')


@pytest.mark.parametrize('args,message', [
    ((5, 0, (1,), (1,)), 'a tensor should be built on a typed storage, got int'),
    (('S', -1, (2,), (1,)), 'bad tensor layout in the pickle: offset -1, size (2,), stride (1,)'),
    (('S', 0, (2, 3), (1,)), 'bad tensor layout in the pickle: offset 0, size (2, 3), stride (1,)'),
    (('S', 0, (2,), (-1,)), 'bad tensor stride in the pickle: (-1,)')],
    ids=['not a storage', 'negative offset', 'rank mismatch', 'negative stride'])
def test_rebuild_tensor_refusals_have_the_full_message(args, message):
    """Bugs: the layout checks joined with 'and'; the messages None, naming type(None) or showing None; the stride
    check's name altered."""
    args = (typed_storage(), *args[1:]) if args[0] == 'S' else args
    with pytest.raises(LegacyPickleError) as err:
        reader._rebuild_tensor(*args)
    assert type(err.value) is LegacyPickleError and str(err.value) == message


def test_rebuild_tensor_keeps_torchs_storage_warning_to_itself():
    """Bug: the warning filter's pattern altered: torch's TypedStorage deprecation leaks to the user on every
    tensor (torch is told to warn every time here)."""
    always = torch.storage._get_always_warn_typed_storage_removal()
    storage = typed_storage()
    torch.storage._set_always_warn_typed_storage_removal(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            reader._rebuild_tensor(storage, 0, (6,), (1,))
    finally:
        torch.storage._set_always_warn_typed_storage_removal(always)
    assert [str(w.message) for w in caught if 'TypedStorage' in str(w.message)] == []


def test_rebuild_parameter_requires_grad_for_floats_only_by_default():
    """Bugs: requires_grad False by default (or read as None); not passed to Parameter, or joined with 'or' (an
    integer tensor cannot require gradients: torch raises); the message None or naming type(None)."""
    assert reader._rebuild_parameter(torch.zeros(2)).requires_grad
    assert not reader._rebuild_parameter(torch.zeros(2), False).requires_grad
    assert not reader._rebuild_parameter(torch.zeros(2, dtype=torch.long)).requires_grad
    with pytest.raises(LegacyPickleError) as err:
        reader._rebuild_parameter(5)
    assert str(err.value) == 'a parameter should wrap a tensor, got int'


def test_newobj_refusal_shows_the_class():
    """Bug: the refused class shown as None."""
    with pytest.raises(RefusedError) as err:
        reader_for()._newobj(5)
    assert str(err.value) == 'x.pkl: refused for safety: copyreg.__newobj__ on 5'


# -- storages, whole-file errors, containers, BUILD --------------------------------------------------------------------
class Touch:
    """Unpickles as ``Path(target).touch()``: proof that an unpickler ran something."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return Path.touch, (self.target,)


def test_storage_bytes_are_decoded_weights_only(tmp_path):
    """Bug: torch.load called with weights_only=False: a storage's bytes are a whole torch pickle, which then runs
    what it names (here it would create the canary file)."""
    canary = tmp_path / 'canary'
    buf = io.BytesIO()
    torch.save(Touch(canary), buf, _use_new_zipfile_serialization=False)
    path = tmp_path / 'storage.pkl'
    msg = refused_message(path, op_call(G('torch.storage', '_load_from_bytes'), [op_bytes(buf.getvalue())]) + b'.',
                       LegacyPickleError)
    assert not canary.exists() and msg.startswith(f'{path} is not a readable StyleGAN-XL / StyleSAN-XL network')


def test_storage_constructor_messages():
    """Bugs: the messages None or naming type(None)."""
    with pytest.raises(LegacyPickleError) as err:
        reader._load_from_bytes(5)
    assert str(err.value) == 'a tensor storage should be bytes, got int'
    buf = io.BytesIO()
    torch.save(torch.zeros(2), buf, _use_new_zipfile_serialization=False)
    with pytest.raises(LegacyPickleError) as err:
        reader._load_from_bytes(buf.getvalue())
    assert str(err.value) == 'a tensor storage decoded to Tensor, expected a typed storage'


def test_whole_file_errors_have_the_full_message(tmp_path):
    """Bugs: the open failure's message None; the zip sentence altered; the wrapped error's type or text shown
    wrongly, or cut at another length than 300 characters."""
    missing = tmp_path / 'missing.pkl'
    msg = raised_message(read_pickle, missing, error=LegacyPickleError)
    assert msg == f"cannot open {str(missing)!r} (No such file or directory); pass the path of a StyleGAN-XL .pkl"
    zipped = tmp_path / 'zipped.pkl'
    torch.save({'a': 1}, zipped)
    assert raised_message(read_pickle, zipped, error=LegacyPickleError) == (
        f'{zipped} is a zip archive (torch.save format), not a StyleGAN-XL network pickle; san_ext.legacy reads the '
        '.pkl files that StyleGAN-XL and StyleSAN-XL release')
    long_name = 'q' * 400
    path = write(tmp_path, op_call(G('numpy', 'dtype'), [op_str(long_name)]) + b'.')
    error = f"data type '{long_name}' not understood"
    with pytest.raises(TypeError, match=error):
        np.dtype(long_name)
    assert raised_message(read_pickle, path, error=LegacyPickleError) == (
        f'{path} is not a readable StyleGAN-XL / StyleSAN-XL network pickle (TypeError: {error[:300]})')


def test_filling_a_non_container_is_refused_with_the_full_message(tmp_path):
    """Bugs: the message naming type(None), or its tail altered."""
    path = tmp_path / 'fill.pkl'
    msg = refused_message(path, op_call(G('collections', 'OrderedDict'), []) + op_int(1) + b'a.', RefusedError)
    assert msg == (f'{path}: refused for safety: APPEND on a OrderedDict object; a pickle fills only the lists, dicts '
                   'and sets it made')


def test_build_refusals_name_the_file(tmp_path):
    """Bugs: BUILD's refusal text altered; the dtype-flags check not given the file's path."""
    path = tmp_path / 'build.pkl'
    assert refused_message(path, b']}b.', RefusedError) == (
        f'{path}: refused for safety: the pickle sets the state (BUILD) of a list object; only recorded objects, numpy '
        'arrays and dtypes take state from a pickle')
    state = list(np.dtype('<i8').__reduce__()[2])
    state[-1] = 63   # "holds object pointers" and more, on an int64
    flagged = G('numpy', 'dtype') + op_tuple([op_str('i8'), b'\x89', b'\x88']) + b'R' + pickle.dumps(
        tuple(state), protocol=2)[2:-1] + b'b.'
    path = tmp_path / 'dtype.pkl'
    msg = refused_message(path, flagged, LegacyPickleError)
    assert msg == (f'{path}: a numpy dtype int64 with flags 63 (numpy derives 0 for it); the file is corrupt or '
                   'crafted')


def test_module_namespaces_are_module_references():
    """Bug: the namespace recorded without its module name."""
    ref = reader_for().resolve('pg_modules.blocks', '__dict__')
    assert type(ref) is ModuleRef and ref.qualname == 'pg_modules.blocks'


def test_easydict_stand_in_is_a_slotted_dict_named_as_a_record():
    """Bugs: the stand-in's __module__, __qualname__ or __slots__ entries misspelt (it would claim another module,
    show another name, or take arbitrary attributes through a __dict__)."""
    easydict = reader_for()._easydict
    obj = easydict(a=1)
    assert easydict.__module__ == 'san_ext.legacy.unpickler' and easydict.__qualname__ == 'Record[EasyDict]'
    assert not hasattr(obj, '__dict__') and obj == {'a': 1}
    with pytest.raises(AttributeError):
        obj.anything = 1


def test_dill_module_reference_resolves_dills_helpers():
    """Bug: the dill._dill reference recorded under another name: dill's helpers fetched through it get refused."""
    r = reader_for()
    dill_module = r.resolve('dill', '_dill')
    assert type(dill_module) is ModuleRef and dill_module.qualname == 'dill._dill'
    cell = r._getattr(dill_module, '_create_cell')(7)
    assert type(cell) is CallRecord and cell.qualname == 'call.dill._create_cell'


def test_record_classes_and_module_references_describe_themselves():
    """Bugs: record classes claiming another __module__ (misspelt key); a module reference's name not empty."""
    cls = record_class('pg_modules.blocks', 'DownBlock')
    assert cls.__module__ == 'san_ext.legacy.records' and cls.__qualname__ == 'Record[pg_modules.blocks.DownBlock]'
    ref = ModuleRef('timm.models')
    assert (ref.qualname, ref.class_name) == ('timm.models', '')


def test_persistent_source_hash_survives_lone_surrogates():
    """Bugs: the source encoded strictly, or with a misspelt error handler: a source holding a lone surrogate (which
    pickle can carry) would raise instead of being hashed."""
    rec = PersistentRecord('Generator', {}, 6, 'a\ud800b', 'training.networks_stylegan2')
    assert rec.module_src_sha256 == hashlib.sha256(b'a?b').hexdigest() and rec.version == 6
