"""Checkpoints: round trips, atomic writes under a crash, clear errors for corrupt files, gen_images on a snapshot.

CPU only, tiny generators; no training loop.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from scripts import load_script  # tests/scripts.py

from san_ext import checkpoint as ckpt
from san_ext.checkpoint import CheckpointError
from san_ext.networks import Generator, GeneratorConfig, SuperresGenerator

TINY = dict(channel_base=512, channel_max=32, num_layers=4)
ROOT = Path(__file__).resolve().parents[1]


def tiny_g(c_dim: int = 3, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(GeneratorConfig(img_resolution=16, c_dim=c_dim, **TINY))


def trained_pair(seed: int = 0):
    """A small G, D stand-in and their Adam optimizers after one step (non-trivial optimizer state)."""
    G = tiny_g(seed=seed)
    D = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    z, c = torch.randn(2, G.z_dim), torch.eye(3)[:2]
    (G(z, c).mean() + D(torch.randn(3, 4)).mean()).backward()
    opt_G.step()
    opt_D.step()
    return G, D, opt_G, opt_D


def save_state(run_dir: Path, cur_nimg: int, seed: int = 0) -> Path:
    G, D, opt_G, opt_D = trained_pair(seed)
    return ckpt.save_training_state(run_dir, G=G, D=D, G_ema=G, opt_G=opt_G, opt_D=opt_D, config={'note': 'test'},
                                    progress={'cur_nimg': cur_nimg, 'batch_idx': cur_nimg // 4},
                                    extra={'pl_mean': torch.tensor(0.25), 'best': {}})


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if '.tmp-' in p.name)


# -- round trips ------------------------------------------------------------------------------------------------------
def test_training_state_round_trip_restores_modules_optimizers_and_progress(tmp_path):
    G, D, opt_G, opt_D = trained_pair()
    path = ckpt.save_training_state(tmp_path, G=G, D=D, G_ema=G, opt_G=opt_G, opt_D=opt_D, config={'a': 1},
                                    progress={'cur_nimg': 12000, 'batch_idx': 3}, extra={'pl_mean': torch.tensor(2.5)})
    assert path.name == 'training-state-000012.safetensors'
    st = ckpt.load_training_state(path)
    assert st.progress == {'cur_nimg': 12000, 'batch_idx': 3} and st.config == {'a': 1}
    assert float(st.extra['pl_mean']) == 2.5
    for name, module in (('G', G), ('D', D), ('G_ema', G)):
        ref = module.state_dict()
        assert st.modules[name].keys() == ref.keys()
        assert all(torch.equal(st.modules[name][k], ref[k]) for k in ref)
    for name, opt in (('G', opt_G), ('D', opt_D)):
        ref, got = opt.state_dict(), st.optimizers[name]
        assert got['param_groups'] == [dict(g, betas=tuple(g['betas'])) for g in ref['param_groups']]
        assert got['state'].keys() == ref['state'].keys()
        for i, s in ref['state'].items():
            assert all(torch.equal(got['state'][i][k], v) for k, v in s.items())
    fresh = torch.optim.Adam(G.parameters(), lr=1e-3)
    fresh.load_state_dict(st.optimizers['G'])  # loads into a real optimizer


def test_rng_states_restore_all_generators(tmp_path):
    state = ckpt.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    path = ckpt.save_training_state(tmp_path, G=tiny_g(), D=torch.nn.Linear(2, 2), G_ema=tiny_g(),
                                    opt_G=torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]),
                                    opt_D=torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]), config=None,
                                    progress={'cur_nimg': 0})
    ckpt.restore_rng_state(state)  # from memory
    assert torch.equal(torch.rand(3), expected[0])
    ckpt.restore_rng_state(ckpt.load_training_state(path).rng)  # the state saved on disk (after the draws above)
    after = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.restore_rng_state(ckpt.load_training_state(path).rng)
    assert torch.equal(torch.rand(3), after[0]) and np.array_equal(np.random.rand(3), after[1])
    assert random.random() == after[2]


def test_load_generator_rebuilds_stem_and_superres_without_pickle(tmp_path):
    G = tiny_g()
    snap = ckpt.save_snapshot(tmp_path, G, {'x': 1}, cur_nimg=5000)
    assert snap.name == 'network-snapshot-000005.safetensors'
    assert json.loads(snap.with_suffix('.json').read_text())['progress']['cur_nimg'] == 5000
    G2 = ckpt.load_generator(snap)
    z, c = torch.randn(2, G.z_dim), torch.eye(3)[:2]
    assert torch.equal(G2(z, c), G.eval()(z, c)) and not any(p.requires_grad for p in G2.parameters())
    torch.manual_seed(1)
    S = SuperresGenerator(G, head_layers=3, up_factor=2)
    S2 = ckpt.load_generator(ckpt.save_snapshot(tmp_path, S, None, cur_nimg=6000, name='sr'))
    assert isinstance(S2, SuperresGenerator) and S2.img_resolution == 32
    assert torch.equal(S2(z, c), S.eval()(z, c))
    state = save_state(tmp_path, 7000)  # a training state's G_ema
    assert isinstance(ckpt.load_generator(state), Generator)


def test_sidecars_written_before_synthesis_was_called_cfg_still_load_and_resume(tmp_path):
    """GeneratorConfig's ``synthesis`` was ``cfg`` (G.cfg.cfg); old snapshots and training states keep working."""
    def age(path: Path) -> None:
        side = path.with_suffix('.json')
        record = json.loads(side.read_text())
        gen = record['generator']['cfg']
        gen['cfg'] = gen.pop('synthesis')
        side.write_text(json.dumps(record))

    G = tiny_g()
    snap, state = ckpt.save_snapshot(tmp_path, G, None, cur_nimg=0), save_state(tmp_path, 1000)
    age(snap)
    age(state)
    assert ckpt.read_generator_spec(snap) == ckpt.generator_spec(G)
    assert ckpt.generator_spec(ckpt.load_generator(snap)) == ckpt.generator_spec(G)
    assert ckpt.load_training_state(state).generator == ckpt.generator_spec(tiny_g())  # what resume compares
    assert GeneratorConfig.from_dict({'img_resolution': 16, 'cfg': 'stylegan3-r'}).synthesis == 'stylegan3-r'


# -- atomic writes ----------------------------------------------------------------------------------------------------
def test_crash_during_write_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    good = save_state(tmp_path, 1000)

    def fail(*args, **kwargs):
        raise OSError('simulated crash in os.replace')

    monkeypatch.setattr(ckpt.os, 'replace', fail)
    with pytest.raises(OSError, match='simulated crash'):
        save_state(tmp_path, 2000, seed=1)
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    assert not (tmp_path / 'training-state-000002.safetensors').exists()
    assert ckpt.find_latest(tmp_path) == good
    ckpt.load_training_state(ckpt.find_latest(tmp_path))


def test_crash_before_sidecar_is_skipped_by_find_latest(tmp_path, monkeypatch):
    good = save_state(tmp_path, 1000)
    real_replace, calls = os.replace, []

    def replace_then_crash(src, dst):
        calls.append(dst)
        if str(dst).endswith('.json'):
            raise OSError('simulated crash before the sidecar')
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, 'replace', replace_then_crash)
    with pytest.raises(OSError):
        save_state(tmp_path, 2000, seed=1)
    monkeypatch.undo()
    orphan = tmp_path / 'training-state-000002.safetensors'
    assert orphan.exists() and not orphan.with_suffix('.json').exists()  # tensors without sidecar
    assert leftovers(tmp_path) == []
    assert ckpt.find_latest(tmp_path) == good
    with pytest.raises(CheckpointError, match='training-state-000002.json is missing'):
        ckpt.load_training_state(orphan)


def test_same_name_overwrite_keeps_old_pair_or_rejects_mismatch(tmp_path, monkeypatch):
    old = save_state(tmp_path, 1000)
    real_replace = os.replace
    monkeypatch.setattr(ckpt.os, 'replace', lambda *a: (_ for _ in ()).throw(OSError('crash')))
    with pytest.raises(OSError):
        save_state(tmp_path, 1000, seed=1)  # same name 000001; the crash hits the tensor rename
    assert ckpt.find_latest(tmp_path) == old
    assert ckpt.load_training_state(old).progress['cur_nimg'] == 1000

    def crash_on_sidecar(src, dst):
        if str(dst).endswith('.json'):
            raise OSError('crash')
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, 'replace', crash_on_sidecar)
    with pytest.raises(OSError):
        save_state(tmp_path, 1000, seed=1)  # new tensors under the old sidecar: same size, other write id
    monkeypatch.undo()
    assert ckpt.find_latest(tmp_path) is None
    with pytest.raises(CheckpointError, match='was overwritten after its sidecar'):
        ckpt.load_training_state(old)


# -- corrupt files ----------------------------------------------------------------------------------------------------
def test_truncated_or_corrupt_files_raise_naming_the_file(tmp_path):
    path = save_state(tmp_path, 3000)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r'training-state-000003\.safetensors is truncated'):
        ckpt.load_training_state(path)
    assert ckpt.find_latest(tmp_path) is None  # the size check already rejects it
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match='is corrupt'):
        ckpt.load_training_state(path)
    path.with_suffix('.json').write_text('{not json')
    with pytest.raises(CheckpointError, match=r'training-state-000003\.json is corrupt'):
        ckpt.load_training_state(path)


def test_snapshot_is_not_a_training_state(tmp_path):
    snap = ckpt.save_snapshot(tmp_path, tiny_g(), None, cur_nimg=0)
    with pytest.raises(CheckpointError, match='not a training state'):
        ckpt.load_training_state(snap)


def test_find_latest_orders_by_progress_and_prune_keeps_newest(tmp_path):
    paths = [save_state(tmp_path, n) for n in (3000, 1000, 2000)]
    assert ckpt.find_latest(tmp_path) == paths[0]
    removed = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert removed == [paths[1]] and not paths[1].exists() and not paths[1].with_suffix('.json').exists()
    assert ckpt.find_latest(tmp_path / 'missing') is None


# -- gen_images on a snapshot -----------------------------------------------------------------------------------------
def test_gen_images_writes_one_png_per_seed_and_class_and_a_grid(tmp_path):
    gen_images = load_script('gen_images')
    snap = ckpt.save_snapshot(tmp_path, tiny_g(c_dim=3), None, cur_nimg=0)
    out = tmp_path / 'out'
    runner = CliRunner()
    res = runner.invoke(gen_images.main, ['--network', str(snap), '--seeds', '0-1,5', '--classes', 'all', '--grid',
                                          '--trunc', '0.7', '--outdir', str(out), '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    expected = sorted(f'seed{s:04d}-class{c:04d}.png' for s in (0, 1, 5) for c in range(3)) + ['grid.png']
    assert names == sorted(expected)
    assert PIL.Image.open(out / 'grid.png').size == (3 * 16, 3 * 16)
    assert PIL.Image.open(out / 'seed0005-class0002.png').size == (16, 16)
    res = runner.invoke(gen_images.main, ['--network', str(snap), '--seeds', '3', '--class', '1', '--outdir',
                                          str(tmp_path / 'one'), '--device', 'cpu'])
    assert res.exit_code == 0 and [p.name for p in (tmp_path / 'one').iterdir()] == ['seed0003-class0001.png']
    res = runner.invoke(gen_images.main, ['--network', str(snap), '--seeds', '0', '--outdir', str(out)])
    assert res.exit_code != 0 and '--class' in res.output
    res = runner.invoke(gen_images.main, ['--network', str(tmp_path / 'nope.safetensors'), '--outdir', str(out)])
    assert res.exit_code != 0 and 'nope.safetensors does not exist' in res.output
