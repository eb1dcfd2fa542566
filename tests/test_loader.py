"""The op loader fails soft: a missing toolkit or a broken build warns once and the reference path runs."""

import warnings

import pytest
import torch
from torch.utils import cpp_extension

from torch_utils.ops import loader


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(loader, '_CACHE', {})
    monkeypatch.delenv('SAN_EXT_CUDA', raising=False)


def test_missing_toolkit_warns_once_and_returns_false(fresh_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(cpp_extension, 'CUDA_HOME', None)
    monkeypatch.setattr(loader, '_try_prebuilt', lambda name: loader.OpBuild(name, reason='no prebuilt library'))
    with pytest.warns(RuntimeWarning, match='no CUDA toolkit'):
        assert loader.load_op('bias_act') is False
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert loader.load_op('bias_act') is False  # cached: no second warning
    assert 'CUDA_HOME' in loader.op_status()['bias_act'].reason


def test_disabled_by_env_is_silent(fresh_cache, monkeypatch):
    monkeypatch.setenv('SAN_EXT_CUDA', '0')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert loader.load_op('upfirdn2d') is False
    assert loader.op_status()['upfirdn2d'].reason == 'disabled by SAN_EXT_CUDA=0'


def test_required_by_env_raises_with_reason(fresh_cache, monkeypatch):
    monkeypatch.setenv('SAN_EXT_CUDA', '1')
    monkeypatch.setattr(cpp_extension, 'CUDA_HOME', None)
    monkeypatch.setattr(loader, '_try_prebuilt', lambda name: loader.OpBuild(name, reason='no prebuilt library'))
    with pytest.raises(RuntimeError, match="SAN_EXT_CUDA=1 but the CUDA op 'bias_act'.*no CUDA toolkit"):
        loader.load_op('bias_act')


def test_unknown_op_and_impl_are_refused(fresh_cache):
    with pytest.raises(ValueError, match='unknown op'):
        loader.load_op('conv9d')
    with pytest.raises(ValueError, match="impl must be 'auto', 'cuda' or 'ref'"):
        loader.use_cuda('bias_act', 'triton', torch.zeros(1))
    assert loader.use_cuda('bias_act', 'ref', torch.zeros(1)) is False
    assert loader.use_cuda('bias_act', 'auto', torch.zeros(1)) is False  # CPU tensor: no build attempted
    assert 'bias_act' not in loader.op_status()


@pytest.mark.skipif(cpp_extension.CUDA_HOME is None, reason='needs a C++ toolchain for torch extensions')
def test_broken_source_warns_with_the_compiler_error(fresh_cache, monkeypatch, tmp_path):
    (tmp_path / 'broken.cpp').write_text('#include <torch/library.h>\nint main( { return 0; }\n')
    monkeypatch.setattr(loader, 'CSRC_DIR', tmp_path)
    monkeypatch.setattr(loader, 'OP_SOURCES', {'broken': ('broken.cpp',)})
    monkeypatch.setenv('SAN_EXT_BUILD_DIR', str(tmp_path / 'build'))
    with pytest.warns(RuntimeWarning, match='JIT build failed.*error'):
        assert loader.load_op('broken') is False


def test_cuda_sources_without_a_gpu_or_arch_list_say_to_set_the_list(fresh_cache, monkeypatch, tmp_path):
    """torch's own failure here is a bare IndexError ('list index out of range') from its architecture probe."""
    (tmp_path / 'k.cu').write_text('')
    monkeypatch.setattr(loader, 'CSRC_DIR', tmp_path)
    monkeypatch.setattr(loader, 'OP_SOURCES', {'k': ('k.cu',)})
    monkeypatch.setattr(cpp_extension, 'CUDA_HOME', str(tmp_path))
    (tmp_path / 'bin').mkdir()
    (tmp_path / 'bin' / 'nvcc').write_text('')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.delenv('TORCH_CUDA_ARCH_LIST', raising=False)
    monkeypatch.setattr(loader, '_try_prebuilt', lambda name: loader.OpBuild(name, reason='no prebuilt library'))
    with pytest.warns(RuntimeWarning, match='no GPU to read the CUDA architecture from; set TORCH_CUDA_ARCH_LIST'):
        assert loader.load_op('k') is False
