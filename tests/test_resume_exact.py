"""Resume that is exact in every saved byte: a run killed with SIGKILL after its first snapshot and continued with
``--resume latest`` saves the same training state, tensor by tensor, as a run never stopped; snapshot names stay
unique below a kimg; a resume takes this command's learning rates.

CPU only, the tiny configuration of tests/test_training.py (2 or 3 steps of batch 4 on the 16x16 digits).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from test_checkpoint import save_state  # tests/test_checkpoint.py: a tiny G, a small D stand-in
from test_training import TINY_ARGS, TINY_OPTS  # tests/test_training.py: the quick start, tinier

from san_ext import checkpoint as ckpt
from san_ext.checkpoint import find_latest, load_training_state
from san_ext.training.loop import run
from san_ext.training.options import TrainOptions, build_config

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures('one_thread')


def tensor_bytes(path: Path) -> dict[str, bytes]:
    """Every tensor of a safetensors file as its raw bytes (so -0.0 and 0.0, or two NaN payloads, differ)."""
    return {k: v.reshape(-1).view(torch.uint8).numpy().tobytes() for k, v in safetensors.torch.load_file(path).items()}


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f'the run ended (exit {proc.returncode}) before {what}')
        if time.monotonic() > deadline:
            pytest.fail(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.02)


def test_sigkill_after_the_first_snapshot_and_resume_save_the_same_bytes(tmp_path, digits16):
    """2 steps straight == 1 step, SIGKILL, ``--resume latest``, 1 step: every tensor of the final training state
    (weights, both Adam states, the RNG states, pl_mean) byte for byte, and its non-tensor tree and progress."""
    args = [sys.executable, str(ROOT / 'train.py'), '--data', str(digits16), '--kimg', '0.008', '--tick', '0.004',
            '--snap', '1', '--keep-states', '0', *TINY_ARGS]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    killed = subprocess.Popen([*args, '--outdir', str(tmp_path / 'killed')], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list((tmp_path / 'killed').glob('*/training-state-*.json')), 300, 'its first snapshot',
                 killed)
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()
    (run_dir,) = (tmp_path / 'killed').iterdir()
    assert not (run_dir / 'training-state-000000_008.json').exists(), 'the kill came after the end of the run'
    resumed = subprocess.run([*args, '--outdir', str(tmp_path / 'killed'), '--resume', 'latest'], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resuming from' in resumed.stdout and [p.name for p in (tmp_path / 'killed').iterdir()] == [run_dir.name]
    assert not [p.name for p in run_dir.iterdir() if '.tmp-' in p.name]  # a temp file of the killed writer is gone
    straight = run(build_config(TrainOptions(outdir=str(tmp_path / 'straight'), data=str(digits16), kimg=0.008,
                                             tick=0.004, snap=1, keep_states=0, **TINY_OPTS)))
    a, b = find_latest(straight), find_latest(run_dir)
    assert a.name == b.name == 'training-state-000000_008.safetensors'
    ta, tb = tensor_bytes(a), tensor_bytes(b)
    assert ta.keys() == tb.keys() and any(k.startswith('rng/') for k in ta)
    differ = [k for k in ta if ta[k] != tb[k]]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:5]}'
    sa, sb = (json.loads(p.with_suffix('.json').read_text()) for p in (a, b))
    assert sa['tree'] == sb['tree'] and sa['progress'] == sb['progress']


def test_sub_kimg_snapshots_get_unique_sorted_names_and_keep_states_keeps_that_many(tmp_path):
    """Ticks of 4 images: every state has its own name, names sort as cur_nimg does across a whole kimg, the
    newest is found by --resume latest, and pruning to 3 keeps 3 distinct states."""
    nimgs = (4, 8, 12, 996, 1000, 1004)
    paths = [save_state(tmp_path, n) for n in nimgs]
    names = [p.name for p in paths]
    assert len(set(names)) == len(nimgs)
    assert names == sorted(names)  # sorted by name == sorted by images seen
    assert names[:2] == ['training-state-000000_004.safetensors', 'training-state-000000_008.safetensors']
    assert names[4] == 'training-state-000001.safetensors'  # whole kimg keep their old names
    assert ckpt.find_latest(tmp_path) == paths[-1]
    ckpt.prune_checkpoints(tmp_path, keep=3)
    kept = sorted(p.name for p in tmp_path.glob('training-state-*.safetensors'))
    assert kept == names[-3:]
    assert [load_training_state(tmp_path / n).progress['cur_nimg'] for n in kept] == [996, 1000, 1004]


def test_resume_applies_new_learning_rates_and_config_json_tells_them(tmp_path, digits16, caplog):
    """--glr/--dlr given on resume are the rates the optimizers use afterwards (Adam's load_state_dict would restore
    the old ones), the log says so, and config.json records them."""
    common = dict(tick=0.004, snap=1, **TINY_OPTS)
    run_dir = run(build_config(TrainOptions(outdir=str(tmp_path), data=str(digits16), kimg=0.004, **common)))
    before = load_training_state(find_latest(run_dir)).optimizers
    assert before['G']['param_groups'][0]['lr'] == pytest.approx(0.0025 * 4 / 5)
    caplog.set_level('WARNING')
    cfg = build_config(TrainOptions(outdir=str(tmp_path), data=str(digits16), kimg=0.008, resume='latest', glr=0.001,
                                    dlr=0.0005, **common))
    assert run(cfg) == run_dir
    after = load_training_state(find_latest(run_dir)).optimizers
    assert after['G']['param_groups'][0]['lr'] == pytest.approx(0.001 * 4 / 5)
    assert after['D']['param_groups'][0]['lr'] == pytest.approx(0.0005 * 16 / 17)
    assert '--glr' in caplog.text and '--dlr' in caplog.text and 'continuing with' in caplog.text
    written = json.loads((run_dir / 'config.json').read_text())['optim']
    assert (written['glr'], written['dlr']) == (0.001, 0.0005)
