"""san_ext.legacy: reading StyleGAN-XL / StyleSAN-XL pickles without running code, and converting their networks.

The pickles are written here with the structure upstream writes: persistent-class records (torch_utils.persistence
meta dicts with module source text and ``_init_kwargs``), pg_modules / feature_networks / timm 0.4.12 classes
pickled by module path, real torch modules with spectral-norm hooks, tensors through torch's own reduce (storages as
``torch.save`` bytes). Their contents are our small networks renamed to upstream's keys by a reverse mapping written
here, separately from the library's. The UPSTREAM_* constants are hand checks read from pickles that upstream's own
code wrote (autonomousvision/stylegan_xl 4241ff9 and sony/san 0e52b14 with timm 0.4.12, random weights).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from legacy_pickles import (  # tests/legacy_pickles.py: writers of upstream-format pickles
    BACKBONES,
    CHAIN,
    SMALL,
    UPSTREAM_D_COUNT,
    UPSTREAM_D_KEYS,
    UPSTREAM_LAYER_NAMES,
    EasyDict,
    Persistent,
    dump,
    empty,
    fake_function,
    make_D,
    make_G,
    persistent,
    snapshot_dict,
    upstream,
    upstream_discriminator,
    upstream_generator,
)
from torch import nn

from san_ext import legacy
from san_ext.checkpoint import load_generator
from san_ext.layers import SANConv2d, SANEmbedding
from san_ext.legacy.discriminator import convert_discriminator
from san_ext.networks import SuperresGenerator as SR

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def nets():
    G, G_ema = make_G(CHAIN[:1], seed=0), make_G(CHAIN[:1], seed=1)
    return G, G_ema, make_D(san=False), make_D(san=True)


@pytest.fixture(scope='module')
def pickles(tmp_path_factory, nets):
    G, G_ema, D_plain, D_san = nets
    out = tmp_path_factory.mktemp('pkl')
    return {'sgxl': dump(out / 'sgxl32.pkl', snapshot_dict(G, G_ema, upstream_discriminator(D_plain, False))),
            'ssxl': dump(out / 'ssxl32.pkl', snapshot_dict(G, G_ema, upstream_discriminator(D_san, True)))}


def G_input(G, n=2):
    torch.manual_seed(5)
    return torch.randn(n, G.z_dim), torch.arange(n) % max(G.c_dim, 1) if G.c_dim else None


def assert_same_tensors(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    bad = [k for k in sa if sa[k].shape != sb[k].shape or not torch.equal(sa[k].cpu(), sb[k].cpu())]
    assert not bad, bad[:5]


# ---------------------------------------------------------------------------------------------------------------
# The restricted unpickler.

class Reduce:
    """Pickles as ``func(*args)``: how a malicious pickle calls things."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # the pickler wants a callable in first place; it is never called here
        raise AssertionError('never called')


@pytest.mark.parametrize('protocol', [1, 2, 4])
def test_reads_tensors_numpy_and_containers(tmp_path, protocol):
    base = torch.arange(24.0).view(4, 6)
    data = {'view': base[1:, 2:5], 'param': nn.Parameter(torch.randn(3)), 'half': torch.ones(2, dtype=torch.float16),
            'long': torch.LongTensor([7]), 'arr': np.arange(6).reshape(2, 3), 'f64': np.float64(0.25),
            'flag': np.bool_(True), 'od': OrderedDict(a=1), 'ed': EasyDict(x=[1, 2]), 'dev': torch.device('cpu'),
            'dtype': torch.float16, 'size': torch.Size([2, 3]), 'set': {1, 2}}
    out = legacy.read_pickle(dump(tmp_path / 'd.pkl', data, protocol))
    assert torch.equal(out['view'], base[1:, 2:5]) and out['view'].stride() == (6, 1)
    assert isinstance(out['param'], nn.Parameter) and torch.equal(out['param'], data['param'])
    assert out['half'].dtype == torch.float16 and out['long'].tolist() == [7]
    assert np.array_equal(out['arr'], data['arr']) and out['f64'] == 0.25 and out['flag']
    assert out['od'] == {'a': 1} and out['ed'] == {'x': [1, 2]} and out['set'] == {1, 2}
    assert out['dev'] == torch.device('cpu') and out['dtype'] is torch.float16 and out['size'] == (2, 3)


def test_storages_saved_on_a_gpu_load_on_the_cpu(tmp_path, monkeypatch):
    """Upstream snapshots pickle CUDA tensors; their storages must come back on the CPU of a GPU-less machine."""
    monkeypatch.setattr(torch.serialization, 'location_tag', lambda storage: 'cuda:0')
    raw = pickle.dumps({'t': torch.arange(5.0)}, protocol=4)
    monkeypatch.undo()
    assert b'cuda:0' in raw
    (tmp_path / 'cuda.pkl').write_bytes(raw)
    out = legacy.read_pickle(tmp_path / 'cuda.pkl')['t']
    assert out.device.type == 'cpu' and out.tolist() == [0, 1, 2, 3, 4]


def _os_system_bytes(cmd: str) -> bytes:
    """A protocol-0 pickle that calls os.system(cmd), written opcode by opcode."""
    return b'cos\nsystem\n(V' + cmd.encode() + b'\ntR.'


def test_refuses_os_system_and_the_command_never_runs(tmp_path):
    target = tmp_path / 'pwned'
    for name, raw in (('os.system', _os_system_bytes(f'touch {target}')),
                      ('posix.system', pickle.dumps(Reduce(os.system, f'touch {target}')))):
        path = tmp_path / 'evil.pkl'
        path.write_bytes(raw)
        with pytest.raises(legacy.RefusedGlobalError, match=re.escape(name)) as e:
            legacy.load(path)
        assert 'refused for safety' in str(e.value) and str(path) in str(e.value)
        assert not target.exists()


def test_refuses_builtins_exec_via_reduce(tmp_path):
    target = tmp_path / 'pwned'
    path = dump(tmp_path / 'exec.pkl', {'G': Reduce(exec, f'open({str(target)!r}, "w").write("x")')})
    with pytest.raises(legacy.RefusedGlobalError, match=r'builtins\.exec'):
        legacy.read_pickle(path)
    assert not target.exists()


def test_dill_module_lookups_go_through_the_allow_list(tmp_path):
    """dill's _import_module / getattr helpers are allowed; reaching os.system through them is still refused."""
    os_ref = Reduce(fake_function('dill._dill._import_module'), 'os')
    path = dump(tmp_path / 'dill.pkl', {'G': Reduce(Reduce(getattr, os_ref, 'system'), 'touch x')})
    with pytest.raises(legacy.RefusedGlobalError, match=r'os\.system'):
        legacy.read_pickle(path)


def test_persistent_source_is_never_executed(tmp_path):
    target = tmp_path / 'written_by_module_src'
    evil = persistent('Generator')
    type(evil).src = f'open({str(target)!r}, "w").write("pwned")\nclass SuperresGenerator: ...\n'
    path = dump(tmp_path / 'src.pkl', {'G': evil, 'G_ema': evil})
    record = legacy.read_pickle(path)['G']
    assert record.class_name == 'Generator' and len(record.module_src_sha256) == 64
    with pytest.raises(legacy.ConversionError):  # an empty record is no generator; its source was not run
        legacy.load(path)
    assert not target.exists()
    payload = type('Payload', (Persistent,), {'src': f'open({str(target)!r}, "w")\n'})()
    with pytest.raises(legacy.RefusedError, match=r"'Payload'.*source was not run"):
        legacy.load(dump(tmp_path / 'payload.pkl', {'G': payload}))
    assert not target.exists()


def test_unknown_class_is_refused_by_name_unless_allowed(tmp_path):
    obj = empty(upstream('evil_pkg.models.Backdoor'))
    path = dump(tmp_path / 'cls.pkl', {'G': obj})
    with pytest.raises(legacy.RefusedGlobalError, match=r'evil_pkg\.models\.Backdoor') as e:
        legacy.read_pickle(path)
    assert "extra_classes=[('evil_pkg.models', 'Backdoor')]" in str(e.value)
    record = legacy.read_pickle(path, extra_classes=[('evil_pkg.models', 'Backdoor')])['G']
    assert record.qualname == 'evil_pkg.models.Backdoor' and '_modules' in record.dict


def test_calling_a_stored_function_reference_is_refused(tmp_path):
    path = dump(tmp_path / 'call.pkl', {'G': Reduce(fake_function('feature_networks.vit.forward_flex'), 1)})
    with pytest.raises(legacy.RefusedError, match=r'feature_networks\.vit\.forward_flex'):
        legacy.read_pickle(path)


def test_tensor_overrunning_its_storage_is_rejected(tmp_path):
    bad = Reduce(torch._utils._rebuild_tensor_v2, torch.zeros(4).storage(), 2, (100,), (1,), False, OrderedDict())
    with pytest.raises(legacy.LegacyPickleError, match='overruns'):
        legacy.read_pickle(dump(tmp_path / 'oob.pkl', {'t': bad}))


def test_torch_save_archive_is_not_taken_for_a_pickle(tmp_path):
    torch.save({'G': 1}, tmp_path / 'x.pkl')
    with pytest.raises(legacy.LegacyPickleError, match='zip archive'):
        legacy.load(tmp_path / 'x.pkl')


# ---------------------------------------------------------------------------------------------------------------
# Conversion.

@pytest.mark.parametrize('stages,names', list(zip([(), CHAIN[:1], CHAIN], UPSTREAM_LAYER_NAMES)))
def test_our_layer_names_are_upstreams(stages, names):
    with torch.device('meta'):
        assert SR.from_configs(SMALL, stages).synthesis.layer_names == names


def test_test_pickles_have_upstreams_keys(nets):
    """The hand checks: the pickles written here carry the keys and shapes upstream's own D and G have."""
    G, _, D_plain, D_san = nets
    for D, san in ((D_plain, False), (D_san, True)):
        up = upstream_discriminator(D, san).state_dict()
        assert len(up) == UPSTREAM_D_COUNT[san]
        assert {k: tuple(up[k].shape) for k in UPSTREAM_D_KEYS} == UPSTREAM_D_KEYS
    up_G = upstream_generator(G).state_dict()
    assert {'mapping.embed.weight', 'mapping.fc1.weight', 'synthesis.input.freqs',
            'synthesis.L6_32_128.affine.bias', 'synthesis.L4_52_128.down_filter'} <= set(up_G)
    assert up_G['mapping.embed.weight'].shape == (1000, 320)


def test_load_converts_G_G_ema_and_D_exactly(pickles, nets):
    G, G_ema, D_plain, _ = nets
    out = legacy.load(pickles['sgxl'])
    assert not {'pg_modules', 'dnnlib', 'training', 'feature_networks', 'torch_utils.persistence'} & set(sys.modules)
    assert out.config.generator == SMALL and out.config.stages == CHAIN[:1]
    assert out.config.discriminator.backbones == BACKBONES and not out.config.discriminator.san
    assert (out.config.discriminator.img_resolution, out.config.discriminator.c_dim) == (32, 10)  # from G: 16 px x 2
    for ours, theirs in ((out.G, G), (out.G_ema, G_ema), (out.D, D_plain)):
        assert_same_tensors(ours, theirs)
        assert not ours.training and not any(p.requires_grad for p in ours.parameters())
    z, c = G_input(G_ema)
    torch.testing.assert_close(out.G_ema(z, c), G_ema(z, c), rtol=0, atol=0)
    meta = out.meta
    assert meta['kind'] == 'stylegan-xl' and meta['progress']['cur_nimg'] == [4000]
    assert meta['training_set_kwargs']['resolution'] == 32 and len(meta['sha256']) == 64
    dropped = meta['reports']['D']['dropped']
    assert len(dropped) == 6 and all('.pretrained.model.' in k for k in dropped)
    assert set(dropped.values()) == {'ViT final norm / classifier heads: unused by the 4 hooked blocks'}
    assert meta['reports']['D']['component'] == 'D'
    assert meta['reports']['D']['rewritten'] == ['class rows of every mini-disc cut to the first c_dim=10 (upstream '
                                                 'always allocates 1000)']


def test_superres_chain_and_unconditional_stem_are_inferred(tmp_path):
    G = make_G(CHAIN, seed=3)
    out = legacy.load(dump(tmp_path / 'chain.pkl', {'G_ema': upstream_generator(G)}), components=('G_ema',))
    assert out.config.stages == CHAIN and out.G_ema.img_resolution == 128
    assert_same_tensors(out.G_ema, G)
    stem = make_G((), c_dim=0, seed=4)
    out = legacy.load(dump(tmp_path / 'uncond.pkl', {'G_ema': upstream_generator(stem)}), components=('G_ema',))
    assert out.config.generator == dataclasses.replace(SMALL, c_dim=0)
    assert_same_tensors(out.G_ema, stem)
    assert list(out.meta['reports']['G_ema']['dropped']) == ['mapping.embed.weight']


def _head_logits(D):
    """The mini-discriminators' logits on the same unit-scale feature maps (random-weight backbones would feed them
    huge, cancelling features that float32 rounds visibly)."""
    torch.manual_seed(0)
    out = []
    for key, heads in D.discriminators.items():
        channels = D.feature_networks[key].out_channels
        feats = [torch.randn(2, ch, 64 >> i, 64 >> i) for i, ch in enumerate(channels)]
        with torch.no_grad():
            out.append(heads(feats, torch.tensor([1, 7]) if D.cfg.c_dim else None))
    return torch.cat(out, dim=1)


def test_plain_heads_convert_to_san_heads_with_the_same_logits(tmp_path, pickles, nets):
    _, _, D_plain, _ = nets
    out = legacy.load(pickles['sgxl'], components=('G_ema', 'D'), san=True)
    assert isinstance(out.D.discriminators['tf_efficientnet_lite0'].mini_discs['0'].embed, SANEmbedding)
    torch.testing.assert_close(_head_logits(out.D), _head_logits(D_plain), rtol=1e-5, atol=1e-5)
    assert out.meta['reports']['D']['rewritten'][0] == ('plain StyleGAN-XL heads -> SAN heads, same function: class '
                                                        'projection embed_proj(embed(c)) -> SANEmbedding rows '
                                                        '(direction, scale)')
    uncond = make_D(san=False, c_dim=0)
    G = make_G(CHAIN[:1], c_dim=0)
    path = dump(tmp_path / 'uncond.pkl', snapshot_dict(G, G, upstream_discriminator(uncond, False)))
    out = legacy.load(path, components=('G', 'D'), san=True)
    assert isinstance(out.D.discriminators['tf_efficientnet_lite0'].mini_discs['0'].last_layer, SANConv2d)
    assert out.meta['reports']['D']['rewritten'] == ['plain StyleGAN-XL heads -> SAN heads, same function: last '
                                                     'spectral-norm conv -> SANConv2d (direction W/||W||, scale '
                                                     '||W||)']
    kept = legacy.load(path, components=('G', 'D'))   # plain heads stay plain: the last conv is renamed, not split
    assert not kept.D.cfg.san and kept.meta['reports']['D']['rewritten'] == []
    assert_same_tensors(kept.D, uncond)
    torch.testing.assert_close(_head_logits(out.D), _head_logits(uncond), rtol=1e-5, atol=1e-5)


def test_san_pickle_keeps_san_heads_and_refuses_plain(pickles, nets):
    _, _, _, D_san = nets
    out = legacy.load(pickles['ssxl'], components=('G_ema', 'D'))
    assert out.meta['kind'] == 'stylesan-xl' and out.D.cfg.san
    assert_same_tensors(out.D, D_san)
    assert not any('SAN heads' in note for note in out.meta['reports']['D']['rewritten'])  # nothing was rewritten
    with pytest.raises(legacy.ConversionError, match='SAN heads'):
        legacy.load(pickles['ssxl'], components=('D',), san=False)


def test_strict_load_names_unmapped_tensors(tmp_path, nets):
    tree = upstream_generator(nets[1])
    tree.mapping.register_parameter('bogus', nn.Parameter(torch.zeros(3)))
    path = dump(tmp_path / 'extra.pkl', {'G_ema': tree})
    with pytest.raises(legacy.ConversionError, match=r'mapping\.bogus'):
        legacy.load(path, components=('G_ema',))
    out = legacy.load(path, components=('G_ema',), strict=False)
    assert out.meta['reports']['G_ema']['unexpected'] == ['mapping.bogus']
    assert_same_tensors(out.G_ema, nets[1])


def test_strict_load_of_D_names_unmapped_tensors(tmp_path, nets):
    """Bugs: strict not passed on to the discriminator's conversion (its default, or None)."""
    tree = upstream_discriminator(nets[2], False)
    tree.register_parameter('bogus', nn.Parameter(torch.zeros(3)))
    path = dump(tmp_path / 'd_extra.pkl', {'G_ema': upstream_generator(nets[1]), 'D': tree})
    with pytest.raises(legacy.ConversionError, match=r'no rule maps: bogus'):
        legacy.load(path, components=('G_ema', 'D'))
    out = legacy.load(path, components=('G_ema', 'D'), strict=False)
    assert out.meta['reports']['D']['unexpected'] == ['bogus']
    with pytest.raises(legacy.ConversionError, match=r'no rule maps: bogus'):   # strict by default
        convert_discriminator(legacy.read_pickle(path)['D'], c_dim=10, img_resolution=32)


def test_unconditional_san_pickle_keeps_its_heads(tmp_path):
    """Bugs: the unconditional SAN branch taken for another class count ('c_dim == 1'), or its last_layer keys
    looked up under another name (the heads would stay at their init)."""
    D = make_D(san=True, c_dim=0)
    G = make_G(CHAIN[:1], c_dim=0)
    path = dump(tmp_path / 'ssxl_uncond.pkl', snapshot_dict(G, G, upstream_discriminator(D, True)))
    out = legacy.load(path, components=('G', 'D'))
    assert out.D.cfg.san and out.D.cfg.c_dim == 0 and out.meta['kind'] == 'stylesan-xl'
    assert_same_tensors(out.D, D)


def test_released_pickle_is_a_superres_stem(pickles, nets):
    from san_ext.training.build import load_stem, stem_spec
    G_ema = nets[1]
    assert stem_spec(str(pickles['sgxl'])) == legacy.load(pickles['sgxl'], ('G_ema',)).config.generator_spec
    stem = load_stem(str(pickles['sgxl']))
    assert_same_tensors(stem, G_ema)
    grown = SR(stem, head_layers=3, up_factor=2)
    assert grown.img_resolution == 64 and grown.stem_layer_names == ['L0_36_128', 'L1_36_128', 'L3_36_128',
                                                                       'L4_52_128']
    assert torch.equal(grown.synthesis.L4_52_128.weight, G_ema.synthesis.L4_52_128.weight)


def test_cli_writes_a_snapshot_that_loads(tmp_path, pickles, nets):
    from san_ext.legacy.__main__ import main
    res = CliRunner().invoke(main, [str(pickles['sgxl']), '--out', str(tmp_path / 'stems')])
    assert res.exit_code == 0, res.output
    assert_same_tensors(load_generator(tmp_path / 'stems' / 'sgxl32.safetensors'), nets[1])
    res = CliRunner().invoke(main, [str(tmp_path / 'stems' / 'sgxl32.json')])
    assert res.exit_code != 0


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get('SAN_EXT_LEGACY_PKL'), reason='set SAN_EXT_LEGACY_PKL to a released .pkl')
def test_a_released_pickle_converts():
    out = legacy.load(os.environ['SAN_EXT_LEGACY_PKL'], components=('G_ema', 'D'), san=True)
    for report in out.meta['reports'].values():
        assert not report['missing'] and not report['unexpected']
    z, c = G_input(out.G_ema, 1)
    with torch.no_grad():
        assert torch.isfinite(out.G_ema(z, c)).all()


def test_train_options_take_a_released_pickle_as_path_stem(tmp_path, pickles, nets):
    """`train.py --superres --path_stem X.pkl`: the option checks read the stem's architecture from the pickle."""
    from san_ext.data import make_digits_dataset
    from san_ext.training.options import OptionError, TrainOptions, build_config

    data64 = make_digits_dataset(tmp_path / 'digits64.zip', resolution=64)
    opts = dict(outdir=str(tmp_path / 'runs'), cond=True, batch=4, backbones=('tf_efficientnet_lite0',),
                pretrained=False, metrics=('none',), workers=0, device='cpu', superres=True, head_layers=3)
    cfg = build_config(TrainOptions(data=str(data64), path_stem=str(pickles['sgxl']), up_factor=2, **opts))
    spec = legacy.read_generator_spec(pickles['sgxl'])
    assert cfg.superres.path_stem == str(pickles['sgxl']) and dataclasses.asdict(cfg.G) == spec['cfg']
    with pytest.raises(OptionError, match='--up_factor'):  # the 32 px pickle stem x 4 is not 64 px
        build_config(TrainOptions(data=str(data64), path_stem=str(pickles['sgxl']), up_factor=4, **opts))
    bogus = tmp_path / 'bogus.pkl'
    bogus.write_bytes(b'not a pickle')
    with pytest.raises(OptionError, match='--path_stem'):
        build_config(TrainOptions(data=str(data64), path_stem=str(bogus), up_factor=2, **opts))


# -- the front door: san_ext.checkpoint.load_generator takes a released pickle (gen_images.py, calc_metrics.py) -----
def _pngs(outdir) -> dict:
    import PIL.Image
    return {p.name: np.asarray(PIL.Image.open(p)) for p in sorted(outdir.glob('*.png'))}


def test_gen_images_takes_a_released_pickle_as_its_converted_snapshot(tmp_path, pickles):
    from scripts import load_script  # tests/scripts.py

    from san_ext.legacy.__main__ import main as convert
    assert CliRunner().invoke(convert, [str(pickles['sgxl']), '--out', str(tmp_path / 'stems')]).exit_code == 0
    cli = load_script('gen_images').main
    outs = {}
    for name, network in (('pkl', pickles['sgxl']), ('snap', tmp_path / 'stems' / 'sgxl32.safetensors')):
        res = CliRunner().invoke(cli, ['--network', str(network), '--seeds', '0-1', '--classes', '2-3', '--grid',
                                       '--outdir', str(tmp_path / name), '--device', 'cpu'], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outs[name] = _pngs(tmp_path / name)
    assert sorted(outs['pkl']) == ['grid.png', 'seed0000-class0002.png', 'seed0000-class0003.png',
                                   'seed0001-class0002.png', 'seed0001-class0003.png']
    assert outs['pkl']['seed0000-class0002.png'].shape == (32, 32, 3)
    assert all(np.array_equal(outs['pkl'][k], outs['snap'][k]) for k in outs['pkl'])  # same network, same images


def test_calc_metrics_takes_a_released_pickle(tmp_path, pickles):
    from scripts import load_script  # tests/scripts.py

    from san_ext.data import make_digits_dataset
    from san_ext.metrics import CallableExtractor, register_extractor

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    register_extractor('test-legacy-conv', lambda **kw: CallableExtractor(net, 'test-legacy-conv', 32).eval(),
                       overwrite=True)
    data = make_digits_dataset(tmp_path / 'digits32.zip', resolution=32)
    res = CliRunner().invoke(load_script('calc_metrics').main, [
        '--network', str(pickles['sgxl']), '--data', str(data), '--metrics', 'fid50k_full', '--num-gen', '8',
        '--max-ref', '8', '--extractor', 'test-legacy-conv', '--device', 'cpu', '--batch', '4', '--workers', '0',
        '--run-dir', str(tmp_path), '--no-progress', '--no-cache'], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import json
    record = json.loads((tmp_path / 'metric-fid50k_full.jsonl').read_text())
    assert record['network'] == str(pickles['sgxl']) and np.isfinite(record['results']['fid50k_full'])


def test_front_door_errors_name_the_file(tmp_path):
    from scripts import load_script  # tests/scripts.py

    from san_ext.checkpoint import CheckpointError
    notes = tmp_path / 'notes.txt'
    notes.write_text('hello')
    bogus = tmp_path / 'bogus.pkl'
    bogus.write_bytes(b'not a pickle')
    listed = dump(tmp_path / 'list.bin', [1, 2, 3])  # a pickle without the .pkl suffix: found by its first byte
    cases = {tmp_path / 'nothere.pkl': 'does not exist', tmp_path / 'nothere.safetensors': 'does not exist',
             tmp_path: 'is a directory', notes: 'holds no network', bogus: 'not a usable StyleGAN-XL',
             listed: 'holds a list'}
    gen, metrics = load_script('gen_images').main, load_script('calc_metrics').main
    for path, words in cases.items():
        with pytest.raises(CheckpointError, match=re.escape(str(path))) as info:
            load_generator(path)
        assert words in str(info.value), (path, info.value)
        res = CliRunner().invoke(gen, ['--network', str(path), '--outdir', str(tmp_path / 'out'), '--device', 'cpu'])
        assert res.exit_code == 1 and '--network' in res.output and path.name in res.output, res.output
    for path in (notes, bogus, listed):
        res = CliRunner().invoke(metrics, ['--network', str(path), '--metrics', 'is50k', '--device', 'cpu'])
        assert res.exit_code == 1 and str(path) in res.output and 'cannot load --network' in res.output, res.output
