"""One-line errors, no tracebacks, nothing left behind: what train.py and the network readers say when a new user
gets an option or a file wrong, or when a run has to stop.

CPU only; most cases fail before any network is built. The resume-mismatch and NaN cases build the tiny networks of
tests/test_training.py (the NaN one trains one step).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from scripts import load_script  # tests/scripts.py
from test_checkpoint import tiny_g  # tests/test_checkpoint.py

from san_ext import checkpoint as ckpt
from san_ext.checkpoint import CheckpointError
from san_ext.networks import Generator, GeneratorConfig
from san_ext.training.loss import PhaseLoss, ProjectedGANLoss

TINY_ARGS = ['--cond', '--batch', '4', '--cbase', '512', '--cmax', '32', '--syn_layers', '4', '--backbones',
             'tf_efficientnet_lite0', '--no-pretrained', '--interp-size', '128', '--metrics', 'none', '--workers', '0',
             '--device', 'cpu']
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures('one_thread')


def invoke(cli, args: list[str]):
    return CliRunner().invoke(cli, args)


def assert_one_line_error(res, *words: str) -> str:
    """A non-zero exit whose last line is ``Error: ...`` holding ``words``, and no traceback; returns that line."""
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert 'Traceback' not in res.output, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith('Error: ') and all(w in line for w in words), res.output[-2000:]
    return line


# -- options -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('flag,value', [('--kimg', 'nan'), ('--kimg', 'inf'), ('--glr', 'nan'), ('--dlr', 'inf'),
                                        ('--tick', 'nan')])
def test_non_finite_numbers_are_refused_naming_the_flag(tmp_path, digits16, train_cli, flag, value):
    res = invoke(train_cli, ['--outdir', str(tmp_path), '--data', str(digits16), *TINY_ARGS, flag, value])
    assert_one_line_error(res, flag, 'not a finite number')
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('extra,words', [
    (['--backbones', 'tf_efficientnet_lite00'], ['--backbones:', "unknown timm backbone 'tf_efficientnet_lite00'",
                                                 'tf_efficientnet_lite0']),
    (['--path_stem', 'stem.safetensors'], ['--path_stem:', 'add --superres']),
])
def test_bad_backbone_and_a_path_stem_without_superres_fail_before_anything_is_made(tmp_path, digits16, train_cli,
                                                                                     extra, words):
    res = invoke(train_cli, ['--outdir', str(tmp_path / 'o'), '--data', str(digits16), *TINY_ARGS, '--kimg', '0.004',
                             *extra])
    assert_one_line_error(res, *words)
    assert not (tmp_path / 'o').exists()


def test_superres_hint_never_suggests_an_up_factor_that_is_not_allowed(tmp_path, digits16, train_cli):
    """A 16-px stem and 16-px data: no factor fits; the hint must not say --up_factor 1 (not a choice)."""
    snap = ckpt.save_snapshot(tmp_path, tiny_g(c_dim=10), None, cur_nimg=0)
    res = invoke(train_cli, ['--outdir', str(tmp_path / 'o'), '--data', str(digits16), *TINY_ARGS, '--superres',
                             '--path_stem', str(snap), '--up_factor', '2'])
    line = assert_one_line_error(res, '--up_factor:', 'use data at 32px', 'enlarge')
    assert '--up_factor 1' not in line


# -- resume ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('target', ['train.py', 'snapshot'])
def test_resume_from_a_file_that_is_not_a_training_state_names_that_file(tmp_path, digits16, train_cli, target):
    path = ROOT / 'train.py' if target == 'train.py' else ckpt.save_snapshot(tmp_path, tiny_g(c_dim=10), None, 0)
    res = invoke(train_cli, ['--outdir', str(tmp_path / 'o'), '--data', str(digits16), *TINY_ARGS, '--resume',
                             str(path)])
    line = assert_one_line_error(res, f'--resume {path}')
    assert ('train.py is not a san-ext checkpoint' in line and 'train.safetensors' not in line
            if target == 'train.py' else 'is a network snapshot, not a training state' in line)
    assert not (tmp_path / 'o').exists()


def test_resume_with_another_architecture_names_the_field_and_leaves_no_run_dir(tmp_path, digits16, train_cli):
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(img_resolution=16, c_dim=10, channel_base=512, channel_max=32, num_layers=5))
    lin = torch.nn.Linear(2, 2)
    state = ckpt.save_training_state(tmp_path / 'old', G=G, D=lin, G_ema=G, opt_G=torch.optim.Adam(G.parameters()),
                                     opt_D=torch.optim.Adam(lin.parameters()), config=None, progress={'cur_nimg': 8})
    res = invoke(train_cli, ['--outdir', str(tmp_path / 'o'), '--data', str(digits16), *TINY_ARGS, '--resume',
                             str(state)])
    assert_one_line_error(res, 'another architecture', 'num_layers: 5 in the state vs 4 in this run')
    assert not list((tmp_path / 'o').iterdir())  # the run dir made for the resume is gone again


# -- stops during training ---------------------------------------------------------------------------------------------
def test_nan_stop_is_one_line_and_keeps_the_run_dir(tmp_path, digits16, train_cli, monkeypatch):
    real = ProjectedGANLoss.d_real

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        return PhaseLoss(out.loss * float('nan'), out.stats)

    monkeypatch.setattr(ProjectedGANLoss, 'd_real', poisoned)
    res = invoke(train_cli, ['--outdir', str(tmp_path), '--data', str(digits16), *TINY_ARGS, '--kimg', '0.008',
                             '--tick', '0.004'])
    assert_one_line_error(res, 'D loss is nan at step 0', 'last good checkpoint', '--resume latest')
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / 'config.json').is_file()


# -- network readers: sidecars that are not what they claim ------------------------------------------------------------
def test_a_sidecar_nested_1e5_deep_is_a_clear_error_not_a_recursion_error(tmp_path):
    snap = ckpt.save_snapshot(tmp_path, tiny_g(), None, cur_nimg=0)
    snap.with_suffix('.json').write_text('[' * 100_000 + ']' * 100_000)
    with pytest.raises(CheckpointError, match='nested too deeply'):
        ckpt.load_generator(snap)
    res = invoke(load_script('gen_images').main, ['--network', str(snap), '--seeds', '0', '--class', '0',
                                                  '--outdir', str(tmp_path / 'out'), '--device', 'cpu'])
    assert_one_line_error(res, '--network', 'nested too deeply')
    state = ckpt.save_training_state(tmp_path, G=tiny_g(), D=torch.nn.Linear(2, 2), G_ema=tiny_g(),
                                     opt_G=torch.optim.Adam(tiny_g().parameters()),
                                     opt_D=torch.optim.Adam(torch.nn.Linear(2, 2).parameters()), config=None,
                                     progress={'cur_nimg': 0})
    side = state.with_suffix('.json')
    record = json.loads(side.read_text())
    record['tree']['extra'] = json.loads('[' * 900 + ']' * 900)  # parses, but too deep to decode recursively
    side.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match='malformed'):
        ckpt.load_training_state(state)


@pytest.mark.parametrize('field,value,words', [
    ('channel_max', 10 ** 9, 'declares cfg.channel_max=1000000000, more than the'),
    ('channel_max', 64, 'declares another network than the tensor file holds'),
])
def test_a_sidecar_declaring_another_architecture_fails_before_building_it(tmp_path, monkeypatch, field, value,
                                                                           words):
    """The declared generator is checked against the tensors in the file on the meta device: a huge one is never
    allocated, and a wrong one is named before any real build."""
    snap = ckpt.save_snapshot(tmp_path, tiny_g(), None, cur_nimg=0)
    side = snap.with_suffix('.json')
    record = json.loads(side.read_text())
    record['generator']['cfg'][field] = value
    side.write_text(json.dumps(record))
    real_build, built = ckpt.build_generator, []

    def spy(spec):
        built.append(torch.empty(0).device.type)
        if built[-1] != 'meta':
            raise AssertionError(f'built the declared generator ({field}={value}) for real')
        return real_build(spec)

    monkeypatch.setattr(ckpt, 'build_generator', spy)
    with pytest.raises(CheckpointError, match=words.replace('(', r'\(')):
        ckpt.load_generator(snap)
    assert 'cpu' not in built
