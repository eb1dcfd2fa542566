"""The CUDA sources compile and register their ops, on any machine with nvcc (no GPU needed)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torch_utils.ops.loader import OP_SOURCES

# One registered op per extension that must exist under torch.ops.san_ext once the library is loaded.
PRIMARY_OPS = {'upfirdn2d': 'upfirdn2d', 'bias_act': 'bias_act_fwd', 'normalized_linear': 'normalized_linear'}


def _cuda_home() -> str | None:
    for candidate in (os.environ.get('CUDA_HOME'), '/usr/local/cuda'):
        if candidate and Path(candidate, 'bin', 'nvcc').exists():
            return candidate
    nvcc = shutil.which('nvcc')
    return str(Path(nvcc).resolve().parents[1]) if nvcc else None


@pytest.mark.skipif(_cuda_home() is None, reason='no CUDA toolkit (nvcc) on this machine')
def test_every_op_compiles_and_registers(tmp_path):
    env = dict(os.environ, CUDA_HOME=_cuda_home(), SAN_EXT_CUDA='auto')
    env.setdefault('TORCH_CUDA_ARCH_LIST', '8.0')  # one architecture keeps the CI build short
    report = tmp_path / 'build.json'
    proc = subprocess.run([sys.executable, '-m', 'torch_utils.ops.build', '--json-out', str(report)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r['op']: r for r in json.loads(report.read_text())['ops']}
    assert set(PRIMARY_OPS) == set(OP_SOURCES)
    assert set(rows) == set(OP_SOURCES) and all(r['built'] for r in rows.values()), rows
    probe = ('import torch\nfrom torch_utils.ops.loader import load_op\n'
             f'assert all(load_op(n) for n in {sorted(OP_SOURCES)!r})\n'
             f'missing = [n for n in {sorted(PRIMARY_OPS.values())!r} if not hasattr(torch.ops.san_ext, n)]\n'
             'assert not missing, missing\n')
    check = subprocess.run([sys.executable, '-c', probe], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
