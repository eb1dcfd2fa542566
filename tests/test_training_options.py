"""train.py's loss axis and defaults (``san_ext.training.options``, ``san_ext.training.config``): every registered
loss trains plain (``--loss NAME``) or as its SAN conversion (``--loss NAME-san``), ``--loss san`` is StyleSAN-XL's
Hinge-SAN, the SAN switch has one source (a config whose two switches disagree is refused), and every default is
written once (click option == TrainOptions == config section).

CPU only, the tiny sizes of tests/test_training.py (conditional 16x16 digits, one random-weight backbone).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_training import TINY_ARGS, TINY_OPTS, assert_same_state  # tests/test_training.py

from san_ext import losses
from san_ext.checkpoint import find_latest, load_training_state
from san_ext.networks import DiscriminatorConfig, GeneratorConfig
from san_ext.training import from_json, to_json
from san_ext.training.config import DataConfig, LossConfig, OptimConfig, RunConfig, TrainingConfig
from san_ext.training.loop import run
from san_ext.training.options import OptionError, TrainOptions, build_config

pytestmark = pytest.mark.usefixtures('one_thread')


def dry_run(train_cli, outdir: Path, data: Path, *extra: str) -> TrainingConfig:
    """The config ``train.py`` would run (its --dry-run output) with the tiny options."""
    res = CliRunner().invoke(train_cli, ['--outdir', str(outdir), '--data', str(data), *TINY_ARGS, *extra, '-n'])
    assert res.exit_code == 0, res.output
    return from_json(res.output)


# -- the loss axis ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('spec', losses.list_specs())
def test_every_loss_spec_sets_the_loss_and_both_san_switches(tmp_path, digits16, train_cli, spec):
    cfg = dry_run(train_cli, tmp_path, digits16, '--loss', spec)
    name, san = ('hinge', True) if spec == 'san' else (spec.removesuffix('-san'), spec.endswith('-san'))
    assert (cfg.loss.name, cfg.loss.san, cfg.D.san) == (name, san, san)
    assert cfg.loss.spec == losses.spec_name(name, san)
    assert not list(tmp_path.iterdir())  # a dry run creates nothing


def test_san_is_the_default_and_stylesan_xl_hinge_san(tmp_path, digits16, train_cli):
    default, san = dry_run(train_cli, tmp_path, digits16), dry_run(train_cli, tmp_path, digits16, '--loss', 'san')
    assert default == san == dry_run(train_cli, tmp_path, digits16, '--loss', 'hinge-san')
    assert (san.loss.name, san.loss.san, san.D.san, san.loss.spec) == ('hinge', True, True, 'hinge-san')


def test_bad_loss_spec_fails_listing_the_valid_ones(tmp_path, digits16, train_cli):
    res = CliRunner().invoke(train_cli, ['--outdir', str(tmp_path), '--data', str(digits16), *TINY_ARGS,
                                         '--loss', 'relativistic-san'])
    assert res.exit_code == 2 and "'relativistic-san' is not one of" in res.output, res.output
    assert all(repr(s) in res.output for s in losses.list_specs())
    with pytest.raises(OptionError, match=r'^--loss: unknown loss .hinge\+san.; known: san, hinge, hinge-san, ') as e:
        build_config(TrainOptions(outdir=str(tmp_path), data=str(digits16), **{**TINY_OPTS, 'loss': 'hinge+san'}))
    assert 'wasserstein-san' in str(e.value)
    assert not list(tmp_path.iterdir())


def test_train_py_trains_nonsaturating_san_and_resumes_bit_for_bit(tmp_path, digits16, train_cli):
    """The config of ``train.py --loss nonsaturating-san`` (its --dry-run), run as train.py runs it, with a 1-column
    sample grid (the grids cost more than the steps): 2 steps straight == 1 step + ``--resume latest`` + 1 step (G, D,
    G_ema, both optimizers), and it is a SAN run (SAN heads in D, the SAN alignment logged at each tick)."""
    def train(outdir: Path, kimg: str, *extra: str) -> Path:
        cfg = dry_run(train_cli, outdir, digits16, '--loss', 'nonsaturating-san', '--kimg', kimg, '--tick', '0.004',
                      '--snap', '2', *extra)
        return run(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, grid_cols=1)))

    straight = train(tmp_path / 'a', '0.008')
    first = train(tmp_path / 'b', '0.004')
    assert train(tmp_path / 'b', '0.008', '--resume', 'latest') == first  # continues in the same run directory
    cfg = from_json((first / 'config.json').read_text())
    assert (cfg.loss.name, cfg.loss.san, cfg.D.san) == ('nonsaturating', True, True)
    a, b = load_training_state(find_latest(straight)), load_training_state(find_latest(first))
    assert a.progress == b.progress and a.progress['cur_nimg'] == 8
    assert_same_state(a, b)
    assert any(k.endswith('.scale') for k in a.modules['D'])  # SAN heads (SANConv2d / SANEmbedding scales)
    ticks = [json.loads(line) for line in (first / 'stats.jsonl').read_text().splitlines()]
    assert len(ticks) == 2 and all(any(k.startswith('SAN/alignment/') for k in t) for t in ticks)


# -- one SAN switch ---------------------------------------------------------------------------------------------------
def test_a_config_whose_two_san_switches_disagree_is_refused(tmp_path, digits16):
    cfg = build_config(TrainOptions(outdir=str(tmp_path), data=str(digits16), **TINY_OPTS))
    with pytest.raises(ValueError, match=r'loss\.san=True but D\.san=False.*--loss hinge-san'):
        dataclasses.replace(cfg, D=dataclasses.replace(cfg.D, san=False))
    with pytest.raises(ValueError, match=r'loss\.san=False but D\.san=True.*--loss nonsaturating\b'):
        dataclasses.replace(cfg, loss=LossConfig(name='nonsaturating', san=False))
    d = cfg.to_dict()
    d['D']['san'] = False
    with pytest.raises(ValueError, match=r'loss\.san=True but D\.san=False'):
        from_json(d)  # a hand-edited config.json fails the same way


def test_older_configs_with_hinge_and_san_true_still_load(tmp_path, digits16):
    """A config.json (and a training state's sidecar config) written before loss specs: ``--loss san`` was stored
    as ``loss.name='hinge', loss.san=True`` and ``D.san=True``, as it still is."""
    d = build_config(TrainOptions(outdir=str(tmp_path), data=str(digits16), **TINY_OPTS)).to_dict()
    assert (d['loss']['name'], d['loss']['san'], d['D']['san']) == ('hinge', True, True)
    cfg = from_json(json.dumps(d))
    assert cfg.loss.spec == 'hinge-san' and cfg.D.san


def test_config_json_written_before_synthesis_was_called_cfg_still_reads(tmp_path, digits16):
    cfg = build_config(TrainOptions(outdir=str(tmp_path), data=str(digits16), metrics=('none',), preset='stylegan3-r'))
    d = json.loads(to_json(cfg))
    d['G']['cfg'] = d['G'].pop('synthesis')
    assert from_json(d) == cfg and cfg.G.synthesis == 'stylegan3-r'


def test_loss_config_refuses_a_spec_as_its_name_saying_how_to_write_it():
    with pytest.raises(ValueError, match=r"unknown loss name 'nonsaturating-san'.*name='nonsaturating', san=True"):
        LossConfig(name='nonsaturating-san')
    with pytest.raises(ValueError, match=r"unknown loss name 'san'.*name='hinge', san=True"):
        LossConfig(name='san')


# -- defaults written once --------------------------------------------------------------------------------------------
def test_click_defaults_are_the_train_options_defaults(train_cli):
    ctx = train_cli.make_context('train.py', ['--outdir', 'runs', '--data', 'data.zip'])
    params = {**ctx.params, 'up_factor': int(ctx.params['up_factor'])}
    params.pop('dry_run')
    assert TrainOptions(**params) == TrainOptions(outdir='runs', data='data.zip')


def test_default_options_build_the_default_config_sections(tmp_path, digits16):
    cfg = build_config(TrainOptions(outdir=str(tmp_path), data=str(digits16), metrics=('none',)))
    res, ch = cfg.data.resolution, cfg.data.channels
    assert cfg.data == DataConfig(path=str(digits16), resolution=res, channels=ch, label_dim=0)
    assert cfg.loss == LossConfig() and cfg.optim == OptimConfig()
    assert cfg.run == RunConfig(outdir=str(tmp_path), desc=cfg.run.desc)
    assert cfg.G == GeneratorConfig(img_resolution=res, img_channels=ch)
    assert cfg.D == DiscriminatorConfig(img_resolution=res, img_channels=ch)
    assert cfg.preset == TrainingConfig.preset and cfg.superres is None
