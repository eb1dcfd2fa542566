"""Finds or builds the CUDA extension of one op, and never breaks an install when it cannot.

Order: a library prebuilt by ``setup.py`` (``torch_utils/ops/_C_<op>*.so``), then a just-in-time ninja build into a
cache folder keyed by a hash of the sources, the torch version and ``TORCH_CUDA_ARCH_LIST``; when neither works the
op's pure-PyTorch reference runs and one warning per op says why. Every extension registers its ops with PyTorch's
dispatcher under the ``san_ext`` namespace (``TORCH_LIBRARY_FRAGMENT(san_ext, m)``), so callers use
``torch.ops.san_ext.<op>`` and never a private ``aten::`` symbol.

Environment: ``SAN_EXT_CUDA=0`` disables every CUDA path, ``SAN_EXT_CUDA=1`` makes a failed load an error instead of
a warning; ``SAN_EXT_BUILD_DIR`` overrides the cache folder (default: torch's extension cache); ``CUDA_HOME`` and
``TORCH_CUDA_ARCH_LIST`` are honoured and never rewritten.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ['CSRC_DIR', 'OpBuild', 'OP_SOURCES', 'cuda_wanted', 'load_op', 'op_status', 'use_cuda']

CSRC_DIR = Path(__file__).resolve().parents[2] / 'csrc'

# Sources of each op's extension, relative to csrc/. One extension per op: one failing build never hides the others.
OP_SOURCES: dict[str, tuple[str, ...]] = {
    'upfirdn2d': ('upfirdn2d.cpp', 'upfirdn2d.cu'),
    'bias_act': ('bias_act.cpp', 'bias_act.cu'),
    'normalized_linear': ('normalized_linear.cpp', 'normalized_linear.cu'),
}

_log = logging.getLogger(__name__)


@dataclass
class OpBuild:
    """Outcome of loading one op's extension: how it was found, or why not."""

    name: str
    loaded: bool = False
    how: str = ''         # 'prebuilt', 'jit' or '' when not loaded
    reason: str = ''      # why it is not loaded
    path: str = ''


# The one piece of module state the style guide allows: the plugin cache, so each op is loaded (and warns) once.
_CACHE: dict[str, OpBuild] = {}


def cuda_wanted() -> str:
    """Value of ``SAN_EXT_CUDA``: '0' (off), '1' (required) or 'auto'."""
    value = os.environ.get('SAN_EXT_CUDA', 'auto').strip().lower()
    return value if value in ('0', '1') else 'auto'


def _source_paths(name: str) -> list[Path]:
    if name not in OP_SOURCES:
        raise ValueError(f'unknown op {name!r}; known: {", ".join(sorted(OP_SOURCES))}')
    return [CSRC_DIR / s for s in OP_SOURCES[name]]


def _build_key(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths + [CSRC_DIR / 'common.h']:
        if p.exists():
            digest.update(p.read_bytes())
    digest.update(torch.__version__.encode())
    digest.update(str(torch.version.cuda).encode())
    digest.update(os.environ.get('TORCH_CUDA_ARCH_LIST', '').encode())
    return digest.hexdigest()[:12]


def _try_prebuilt(name: str) -> OpBuild:
    """Load the library that ``setup.py`` built ahead of time (``torch_utils/ops/_C_<name>*.so``), if any."""
    matches = sorted(Path(__file__).resolve().parent.glob(f'_C_{name}.*'))
    libs = [p for p in matches if p.suffix in ('.so', '.pyd', '.dll')]
    if not libs:
        return OpBuild(name, reason='no prebuilt library (install with SAN_EXT_CUDA=1 to build one)')
    try:
        torch.ops.load_library(str(libs[0]))
    except (OSError, RuntimeError) as err:
        return OpBuild(name, reason=f'prebuilt {libs[0].name} does not load ({err})')
    return OpBuild(name, loaded=True, how='prebuilt', path=str(libs[0]))


def _try_jit(name: str, verbose: bool) -> OpBuild:
    paths = _source_paths(name)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        return OpBuild(name, reason=f'sources missing: {", ".join(missing)}')
    from torch.utils import cpp_extension  # imported lazily: it probes the CUDA toolkit on import

    if cpp_extension.CUDA_HOME is None or not Path(cpp_extension.CUDA_HOME, 'bin', 'nvcc').exists():
        return OpBuild(name, reason=f'no CUDA toolkit (CUDA_HOME={cpp_extension.CUDA_HOME}); set CUDA_HOME to the '
                                    'folder that holds bin/nvcc')
    if any(p.suffix == '.cu' for p in paths) and not os.environ.get('TORCH_CUDA_ARCH_LIST') \
            and not torch.cuda.is_available():  # torch reads the architectures off the GPUs: IndexError without one
        return OpBuild(name, reason='no GPU to read the CUDA architecture from; set TORCH_CUDA_ARCH_LIST (e.g. '
                                    '"8.0;9.0") to build for a GPU this machine does not have')
    key = _build_key(paths)
    ext_name = f'san_ext_{name}_{key}'
    root = Path(os.environ.get('SAN_EXT_BUILD_DIR') or os.environ.get('TORCH_EXTENSIONS_DIR')
                or Path.home() / '.cache' / 'torch_extensions')
    build_dir = root / ext_name
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        cpp_extension.load(name=ext_name, sources=[str(p) for p in paths], build_directory=str(build_dir),
                           extra_cflags=['-O3'], extra_cuda_cflags=['-O3', '-lineinfo'],
                           extra_include_paths=[str(CSRC_DIR)], is_python_module=False, verbose=verbose)
    except Exception as err:  # a compiler error must not break the caller: the reference path takes over
        return OpBuild(name, reason=f'JIT build failed: {_first_error(str(err))}')
    return OpBuild(name, loaded=True, how='jit', path=str(build_dir))


def _first_error(log: str) -> str:
    """The compiler's first error line (the full log is long); the log's tail when none is marked."""
    errors = [line.strip() for line in log.splitlines() if 'error:' in line.lower() or 'error ' in line.lower()[:60]]
    errors = [e for e in errors if not e.startswith(('Error building', 'ninja', 'FAILED'))]
    return errors[0][:500] if errors else log[-500:]


def load_op(name: str, verbose: bool = False) -> bool:
    """Load op ``name``'s CUDA extension once (prebuilt, else JIT); True when its ``torch.ops.san_ext`` ops exist.

    Fails soft: returns False and warns once with the reason, unless ``SAN_EXT_CUDA=1`` asks for an error.
    """
    if name in _CACHE:
        return _CACHE[name].loaded
    wanted = cuda_wanted()
    if wanted == '0':
        result = OpBuild(name, reason='disabled by SAN_EXT_CUDA=0')
    else:
        result = _try_prebuilt(name)
        if not result.loaded:
            prebuilt_reason = result.reason
            result = _try_jit(name, verbose)
            if not result.loaded:
                result.reason = f'{prebuilt_reason}; {result.reason}'
    _CACHE[name] = result
    if result.loaded:
        _log.info('loaded CUDA op %s (%s, %s)', name, result.how, result.path)
    elif wanted == '1':
        raise RuntimeError(f'SAN_EXT_CUDA=1 but the CUDA op {name!r} could not be loaded: {result.reason}')
    elif wanted != '0':
        warnings.warn(f'san-ext: CUDA op {name!r} unavailable, using the PyTorch reference path: {result.reason}',
                      RuntimeWarning, stacklevel=2)
    return result.loaded


def op_status() -> dict[str, OpBuild]:
    """What :func:`load_op` found so far, per op."""
    return dict(_CACHE)


def use_cuda(name: str, impl: str, *tensors: torch.Tensor) -> bool:
    """Per-call choice of an op's path: True to run the CUDA kernel, False for the reference.

    ``impl='ref'`` always takes the reference; ``'auto'`` takes CUDA when every tensor is on a GPU and the
    extension loads; ``'cuda'`` insists and raises with the reason when that is not possible.
    """
    if impl not in ('auto', 'cuda', 'ref'):
        raise ValueError(f"impl must be 'auto', 'cuda' or 'ref', got {impl!r}")
    if impl == 'ref':
        return False
    on_gpu = all(t.is_cuda for t in tensors if t is not None)
    if on_gpu and load_op(name):
        return True
    if impl == 'cuda':
        why = 'tensors are not all on a CUDA device' if not on_gpu else _CACHE[name].reason
        raise RuntimeError(f"{name}(impl='cuda') cannot run the CUDA kernel: {why}")
    return False
