"""Contracts of san_ext.legacy.load, read_generator_spec and the strict weight loading (legacy/convert.py) that the
broader legacy tests reach without pinning, written against the survivors of a mutation run: the metadata a load
records (kind, the embedded sources' hashes, the augment pipe, bounded training metadata naming the file), the
argument checks of ``load``, every outcome of ``load_converted`` (shapes, missing and unexpected keys with and
without ``strict``, copying versus adopting tensors, meta-device networks) and the discriminator configuration read
from hand-built record trees (no network built). Each test names the planted bug it fails on. Generator-only
pickles of a 16 px stem keep these fast.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import pytest
import torch
from legacy_pickles import (  # tests/legacy_pickles.py: writers of upstream-format pickles
    FAKE_SRC,
    SG2,
    SG3,
    EasyDict,
    dump,
    make_G,
    persistent,
    upstream,
    upstream_generator,
)
from messages import raised_message  # tests/messages.py
from torch import nn

from san_ext import legacy
from san_ext.legacy.convert import ConversionError, ConversionReport, load_converted
from san_ext.legacy.discriminator import infer_discriminator_config
from san_ext.legacy.records import ModuleView, Record, record_class

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def stem():
    return make_G((), seed=5)


@pytest.fixture(scope='module')
def stem_tree(stem):
    return upstream_generator(stem)


# -- metadata ----------------------------------------------------------------------------------------------------------
def test_meta_of_a_generator_only_pickle(tmp_path, stem_tree):
    """Bugs: the kind of a pickle without D not 'unknown'; the embedded-source hashes taken from other keys, None,
    or filed under another name; the augment pipe read from another key or described wrongly."""
    path = dump(tmp_path / 'g.pkl', {'G': stem_tree, 'G_ema': stem_tree,
                                     'augment_pipe': persistent('AugmentPipe', p=0.2)})
    meta = legacy.load(path, components=('G_ema',)).meta
    sha = hashlib.sha256(FAKE_SRC[SG3].encode()).hexdigest()
    assert meta['kind'] == 'unknown'
    assert meta['module_src_sha256'] == {'G': sha, 'G_ema': sha}
    assert meta['augment_pipe'] == 'training.networks_stylegan3_resetting.AugmentPipe (persistent) (not converted)'
    assert meta['training_set_kwargs'] is None and meta['progress'] is None
    assert set(meta) == {'source', 'sha256', 'kind', 'training_set_kwargs', 'progress', 'augment_pipe',
                         'module_src_sha256', 'reports'}


@pytest.mark.parametrize('aug,shown', [(None, None), ('ada', 'str (not converted)'),
                                       (EasyDict(p=0.1), 'EasyDict (not converted)')], ids=['none', 'str', 'easydict'])
def test_meta_describes_an_augment_pipe_that_is_not_a_record_by_its_type(tmp_path, stem_tree, aug, shown):
    """Bugs: the None check inverted or forced; the type-name fallback None or type(None)."""
    path = dump(tmp_path / 'a.pkl', {'G_ema': stem_tree, 'augment_pipe': aug})
    assert legacy.load(path, components=('G_ema',)).meta['augment_pipe'] == shown


@pytest.mark.parametrize('key', ['training_set_kwargs', 'progress'])
def test_oversized_training_metadata_is_refused_naming_the_file(tmp_path, stem_tree, key):
    """Bug: the file's path not passed to the bounded copy (the message says 'the pickle')."""
    deep: list = []
    for _ in range(80):
        deep = [deep]
    path = dump(tmp_path / 'deep.pkl', {'G_ema': stem_tree, key: deep})
    msg = raised_message(legacy.load, path, components=('G_ema',), error=legacy.LegacyPickleError)
    assert msg.startswith(f'{path}: its training metadata is too large or too deeply nested to record')


def test_a_malformed_D_does_not_stop_a_generator_load_and_is_named_when_converted(tmp_path, stem_tree):
    """A D that does not read leaves the kind 'unknown' when only G_ema is asked for; asking for D names it."""
    D = upstream('pg_modules.discriminator.ProjectedDiscriminator')()
    path = dump(tmp_path / 'd.pkl', {'G_ema': stem_tree, 'D': D})
    assert legacy.load(path, components=('G_ema',)).meta['kind'] == 'unknown'
    msg = raised_message(legacy.load, path, ('G_ema', 'D'), error=ConversionError)
    assert msg == "D has no submodule 'discriminators' (has: none); not a StyleGAN-XL network"


# -- load's arguments and read_generator_spec --------------------------------------------------------------------------
@pytest.mark.parametrize('components,shown', [(('G_ema', 'X'), "('G_ema', 'X')"), ((), '()')],
                         ids=['unknown', 'empty'])
def test_load_refuses_bad_components_before_reading(tmp_path, components, shown):
    """Bugs: the unknown list None, the two checks joined with 'and', the message None or showing None. The file does
    not exist: the arguments are checked first."""
    msg = raised_message(legacy.load, tmp_path / 'missing.pkl', components, error=ValueError)
    assert msg == f"components must be a non-empty subset of ('G', 'G_ema', 'D'), got {shown}"


def test_read_generator_spec_names_the_file_and_the_network(tmp_path, stem, stem_tree):
    """Bugs: the missing-network message None; the generator view built without its name (errors say '')."""
    path = dump(tmp_path / 's.pkl', {'G_ema': stem_tree, 'G': persistent('Generator', module=SG2)})
    assert legacy.read_generator_spec(path)['cfg'] == stem.cfg.to_dict()
    msg = raised_message(legacy.read_generator_spec, path, 'D', error=legacy.LegacyPickleError)
    assert msg == f'{path} has no D network'
    msg = raised_message(legacy.read_generator_spec, path, 'G', error=ConversionError)
    assert msg == ('G is a training.networks_stylegan2.Generator (persistent): only StyleGAN-XL generators built on '
                   'StyleGAN3 (--cfg stylegan3-t / stylegan3-r) convert; stylegan2 and fastgan ones do not')


def test_load_names_the_missing_network(tmp_path, stem_tree):
    """Bugs: the missing-G or missing-D message None."""
    path = dump(tmp_path / 'only_ema.pkl', {'G_ema': stem_tree})
    for components, name in ((('G',), 'G'), (('G_ema', 'D'), 'D')):
        msg = raised_message(legacy.load, path, components, error=legacy.LegacyPickleError)
        assert msg == f'{path} has no {name} network'


def test_a_discriminator_needs_a_generator_and_is_refused_before_it_is_converted(tmp_path):
    """Bugs: the no-generator message None; D converted (and its class count and resolution taken) from a None
    generator configuration."""
    D = upstream('pg_modules.discriminator.ProjectedDiscriminator')()
    path = dump(tmp_path / 'only_d.pkl', {'D': D})
    msg = raised_message(legacy.load, path, ('D',), error=legacy.LegacyPickleError)
    assert msg == f'{path} has no generator to take the configuration from'


def test_the_configuration_of_a_D_only_load_is_read_from_G_ema_by_name(tmp_path):
    """Bugs: G_ema not consulted when no generator was converted ('spec is not None', spec = None), or consulted
    although one was ('or'); its view built without its name."""
    bad_ema = persistent('Generator', module=SG2)
    D = upstream('pg_modules.discriminator.ProjectedDiscriminator')()
    path = dump(tmp_path / 'bad_ema.pkl', {'G_ema': bad_ema, 'D': D})
    msg = raised_message(legacy.load, path, ('D',), error=ConversionError)
    assert msg.startswith('G_ema is a training.networks_stylegan2.Generator (persistent): only StyleGAN-XL')


def test_loading_G_alone_ignores_G_ema_and_reports_under_its_name(tmp_path, stem, stem_tree):
    """Bugs: G_ema re-read although G gave the configuration ('spec is None or ...'); the report filed under another
    component name (None, 'G'); D's configuration '' instead of None when D is not loaded."""
    path = dump(tmp_path / 'g_only.pkl', {'G': stem_tree, 'G_ema': persistent('Generator', module=SG2)})
    out = legacy.load(path, components=('G',))
    assert out.config.generator == stem.cfg and out.config.discriminator is None and out.G_ema is None
    assert out.meta['reports']['G']['component'] == 'G'
    path = dump(tmp_path / 'ema.pkl', {'G_ema': stem_tree})
    assert legacy.load(path, components=('G_ema',)).meta['reports']['G_ema']['component'] == 'G_ema'


def test_G_and_G_ema_of_different_architectures_are_refused(tmp_path, stem, stem_tree):
    """Bugs: the architecture of the first generator not kept (this = None, spec = None); the message None."""
    other = upstream_generator(make_G((), c_dim=0, seed=6))
    path = dump(tmp_path / 'mixed.pkl', {'G': other, 'G_ema': stem_tree})
    msg = raised_message(legacy.load, path, ('G_ema', 'G'), error=ConversionError)
    assert msg.startswith(f'{path}: G and G_ema have different architectures (')
    assert "'c_dim': 0" in msg and f"'c_dim': {stem.cfg.c_dim}" in msg


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_load_moves_the_networks_to_the_device(tmp_path, stem_tree):
    """Bug: .to(None) (a no-op) instead of .to(device): only a second device tells them apart."""
    out = legacy.load(dump(tmp_path / 'g.pkl', {'G_ema': stem_tree}), components=('G_ema',), device='cuda')
    assert all(p.is_cuda for p in out.G_ema.parameters())


# -- the bounded copy of training metadata ----------------------------------------------------------------------------
def nested(kind: str, depth: int):
    """A value whose innermost int sits at ``depth`` (the outermost container is at depth 0)."""
    value = 0
    for _ in range(depth):
        value = [value] if kind == 'list' else {'k': value}
    return value


@pytest.mark.parametrize('kind', ['list', 'dict'])
def test_plain_copies_64_levels_and_refuses_65(kind):
    """Bugs: '>=' for the depth limit, a depth step of 2 (or -1) for lists or dicts, a copy starting at depth 1."""
    assert legacy._plain(nested(kind, 64)) == nested(kind, 64)
    msg = raised_message(legacy._plain, nested(kind, 65), error=legacy.LegacyPickleError)
    assert msg.startswith('the pickle: its training metadata is too large or too deeply nested to record (more than '
                          '100000 values or 64 levels)')


def test_plain_copies_100000_values_and_refuses_one_more():
    """Bugs: '<= 0' or '< 1' for the value budget; two values counted per item."""
    assert len(legacy._plain(list(range(99_999)))) == 99_999   # the list itself is the 100,000th value
    with pytest.raises(legacy.LegacyPickleError):
        legacy._plain(list(range(100_000)))


class Scalar:
    """A recorded scalar: ``item()`` only."""

    def item(self):
        return 3


class SizeMethod:
    """``tolist`` and a ``size()`` method (not an array: numpy's size is an attribute)."""

    def tolist(self):
        return [1]

    def size(self):
        return 1

    def __repr__(self):
        return 'SizeMethod()'


def test_plain_converts_each_kind_of_value():
    """Bugs: the array test joined with 'or' (array.array has tolist, no size) or ignoring that size is callable;
    item() looked up on None or under another name, or its callability tested on None; repr(None) for other
    objects."""
    import array
    assert legacy._plain(array.array('i', [1, 2])) == "array('i', [1, 2])"
    assert legacy._plain(SizeMethod()) == 'SizeMethod()'
    assert legacy._plain(Scalar()) == 3
    assert legacy._plain({1: torch.tensor([1.5, 2.0]), 'n': np.float32(0.5), 's': {'a'}}) == {
        '1': [1.5, 2.0], 'n': 0.5, 's': "{'a'}"}


# -- load_converted ----------------------------------------------------------------------------------------------------
def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def tensors_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: torch.randn_like(v.float()).to(v.dtype) + 5 for k, v in module.state_dict().items()}


def test_load_converted_copies_every_tensor_by_default():
    """Bugs: assign=True by default (our parameters become the caller's tensors); the mapped count None."""
    module, report = small(), ConversionReport('net')
    given = tensors_of(module)
    load_converted(module, given, report)
    assert report.mapped == len(given) == 7 and report.missing == [] and report.unexpected == []
    for k, v in module.state_dict().items():
        assert torch.equal(v, given[k]) and v.data_ptr() != given[k].data_ptr()
    given['0.weight'].zero_()
    assert module[0].weight.abs().min() > 0


def test_load_converted_is_strict_by_default_with_the_full_message():
    """Bugs: strict=False by default; the missing-keys problem None or listing None; the sentence altered."""
    module, report = small(), ConversionReport('net')
    given = tensors_of(module)
    del given['0.bias']
    given['extra'] = torch.zeros(1)
    msg = raised_message(load_converted, module, given, report, error=ConversionError)
    assert msg == ('net: our tensors with no counterpart in the pickle: 0.bias; tensors in the pickle that no rule '
                   'maps: extra. Pass strict=False to load anyway (unfilled tensors keep their random init and are '
                   'listed in the report).')


def test_load_converted_without_strict_loads_what_maps_and_reports_the_rest():
    """Bugs: 'k not in tensors' in the shape check (a missing key raises KeyError); torch's load_state_dict called
    strictly (it raises on the missing key)."""
    module, report = small(), ConversionReport('net')
    before = module[0].bias.detach().clone()
    given = tensors_of(module)
    del given['0.bias']
    given['extra'] = torch.zeros(1)
    load_converted(module, given, report, strict=False)
    assert report.missing == ['0.bias'] and report.unexpected == ['extra'] and report.mapped == 6
    assert torch.equal(module[0].bias, before) and torch.equal(module[0].weight, given['0.weight'])


def test_load_converted_refuses_other_shapes_with_the_full_message():
    """Bugs: the shape listing None or showing None for either shape; the message None or its tail altered."""
    module, report = small(), ConversionReport('net')
    given = tensors_of(module)
    given['0.weight'] = torch.zeros(2, 4)
    msg = raised_message(load_converted, module, given, report, strict=False, error=ConversionError)
    assert msg == ('net: the recorded tensors do not fit our network (shapes differ): 0.weight [2, 4] -> ours [2, 3]. '
                   'The inferred configuration is wrong; please report this with the pickle name.')


def test_load_converted_on_the_meta_device_needs_assign_and_every_tensor():
    """Bugs: the meta-device message None; the leftover list None (a meta tensor left unfilled passes); its message
    None or listing None."""
    with torch.device('meta'):
        module = small()
    given = {k: torch.ones(v.shape, dtype=v.dtype) for k, v in module.state_dict().items()}
    msg = raised_message(load_converted, module, given, ConversionReport('m'), error=ConversionError)
    assert msg == 'm: the network was built on the meta device; load with assign'
    del given['1.running_var']
    msg = raised_message(load_converted, module, given, ConversionReport('m'), strict=False, assign=True,
                         error=ConversionError)
    assert msg == 'm: tensors not filled from the pickle: 1.running_var'
    with torch.device('meta'):
        module = small()
    load_converted(module, {k: torch.ones(v.shape, dtype=v.dtype) for k, v in module.state_dict().items()},
                   ConversionReport('m'), assign=True)
    assert not any(t.is_meta for t in module.state_dict().values())


def test_report_drop_keeps_the_reason():
    """Bug: drop() storing None for the reason."""
    report = ConversionReport('net')
    report.drop('pretrained.head.weight', 'classifier head, unused by the discriminator')
    assert report.dropped == {'pretrained.head.weight': 'classifier head, unused by the discriminator'}
    assert '  dropped 1: classifier head, unused by the discriminator' in report.summary()


# -- infer_discriminator_config on hand-built record trees -------------------------------------------------------------
def rec(class_name: str, modules: Optional[dict] = None, params: Optional[dict] = None, **attrs) -> Record:
    """A recorded nn.Module: its class, submodules, parameters and plain attributes (no network is built)."""
    out = record_class('pg_modules.discriminator', class_name)()
    out.state = {'_modules': dict(modules or {}), '_parameters': dict(params or {}), '_buffers': {}, **attrs}
    return out


def heads(n: int, kind: str = 'cond', cmap_dim: int = 48, n_classes: int = 7, embed_dim: int = 100) -> Record:
    """A MultiScaleD of ``n`` mini-discriminators: 'cond' (plain embed), 'san-cond' (SANEmbedding), 'uncond'."""
    def disc() -> Record:
        if kind == 'uncond':
            return rec('SingleDisc', {'main': rec('Sequential')})
        embed = rec('SANEmbedding' if kind == 'san-cond' else 'Embedding',
                    params={'weight': torch.zeros(n_classes, embed_dim)})
        return rec('SingleDiscCond', {'embed': embed}, cmap_dim=cmap_dim)
    return rec('MultiScaleD', {'mini_discs': rec('ModuleDict', {str(i): disc() for i in range(n)})})


def projected_d(kind: str = 'cond', proj_type: Optional[int] = 2, **attrs) -> ModuleView:
    """Two backbones whose settings differ, so that reading the second one shows."""
    recorded = {} if proj_type is None else {'proj_type': proj_type, 'cout': 48, 'expand': False}
    first = rec('F_RandomProj', **recorded)   # proj_type None: nothing recorded, upstream's defaults apply
    second = rec('F_RandomProj', cout=32, expand=True, proj_type=2)
    D = rec('ProjectedDiscriminator', {
        'feature_networks': rec('ModuleDict', {'bb0': first, 'bb1': second}),
        'discriminators': rec('ModuleDict', {'bb0': heads(3, kind), 'bb1': heads(2, kind, cmap_dim=16, n_classes=5,
                                                                                  embed_dim=8)})},
        backbones=['bb0', 'bb1'], **attrs)
    return ModuleView(D, 'D')


def test_discriminator_config_comes_from_the_first_backbone_and_its_heads():
    """Bugs: the second backbone's projection or heads read ([1]); proj_type or cmap_dim looked up under another name
    (their defaults come back); embed_dim or c_dim not taken from the first head's embedding (None, 321, the wrong
    axis or key)."""
    cfg, is_san = infer_discriminator_config(projected_d(), c_dim=None, img_resolution=64)
    assert not is_san
    assert (cfg.backbones, cfg.c_dim, cfg.img_resolution, cfg.san) == (('bb0', 'bb1'), 7, 64, False)
    assert (cfg.num_discs, cfg.cout, cfg.expand, cfg.cmap_dim, cfg.embed_dim) == (3, 48, False, 48, 100)
    assert cfg.diffaug == 'color,translation,cutout' and cfg.pretrained is False
    cfg, _ = infer_discriminator_config(projected_d(), c_dim=10, img_resolution=None)
    assert (cfg.c_dim, cfg.img_resolution) == (10, 256)


@pytest.mark.parametrize('kind,san,expect', [('uncond', None, (0, 320, False)), ('san-cond', None, (7, 320, True)),
                                             ('cond', True, (7, 100, True))])
@pytest.mark.parametrize('c_dim', [None, 7])
def test_discriminator_embed_dim_is_read_only_for_plain_conditional_heads(kind, san, expect, c_dim):
    """Bugs: embed_dim None or 321 by default; read from SAN heads too ('cond and is_san'); the generator's class
    count given to unconditional heads ('if cond or True')."""
    cfg, _ = infer_discriminator_config(projected_d(kind, diffaug=False), c_dim=c_dim, img_resolution=32, san=san)
    assert (cfg.c_dim, cfg.embed_dim, cfg.san) == expect and cfg.diffaug == ''


def test_discriminator_without_recorded_projection_settings_takes_upstreams_defaults():
    """Bugs: a missing proj_type, cout or expand read as None (int(None) fails) or defaulting to anything but
    upstream's 2, 64, True."""
    cfg, _ = infer_discriminator_config(projected_d(proj_type=None), c_dim=None, img_resolution=64)
    assert (cfg.cout, cfg.expand) == (64, True)


def test_a_single_conditional_head_is_conditional():
    """Bug: the head type read from the second mini-discriminator (there is none here)."""
    D = rec('ProjectedDiscriminator', {'feature_networks': rec('ModuleDict', {'bb0': rec('F_RandomProj')}),
                                       'discriminators': rec('ModuleDict', {'bb0': heads(1)})}, backbones=['bb0'])
    cfg, _ = infer_discriminator_config(ModuleView(D, 'D'), c_dim=None, img_resolution=64)
    assert (cfg.c_dim, cfg.num_discs) == (7, 1)


def test_backbones_of_an_unsupported_kind_are_refused_by_name(monkeypatch):
    """Bug: the message None."""
    from san_ext.legacy import discriminator
    view = projected_d()
    cfg, _ = infer_discriminator_config(view, c_dim=None, img_resolution=64)
    monkeypatch.setattr(discriminator, 'backbone_kind', lambda name: 'swin')
    msg = raised_message(discriminator._feature_tensors, view, cfg, ConversionReport('D'), error=ConversionError)
    assert msg == "backbone 'bb0': converting its weights is not supported"


def test_a_discriminator_without_mini_discriminators_is_refused_by_name():
    """Bug: the message None."""
    D = rec('ProjectedDiscriminator', {'feature_networks': rec('ModuleDict', {'bb0': rec('F_RandomProj')}),
                                       'discriminators': rec('ModuleDict', {'bb0': heads(0)})}, backbones=['bb0'])
    msg = raised_message(infer_discriminator_config, ModuleView(D, 'D'), None, 64, error=ConversionError)
    assert msg == 'D has no mini-discriminators'


def test_conditional_heads_with_an_unconditional_generator_are_refused():
    """Bug: c_dim 0 from the generator taken as 0 (plain unconditional heads then read from conditional ones) or as
    one class."""
    msg = raised_message(infer_discriminator_config, projected_d(), 0, 64, error=ConversionError)
    assert msg == ('D has conditional heads but the generator is unconditional (c_dim 0); G and D come from '
                   'different runs')


def test_dotted_backbone_names_are_refused():
    """torch's ModuleDict cannot hold 'deit_tiny_patch16_224.fb_in1k' as a key, so no StyleGAN-XL pickle records one.
    Bug: such a name accepted (its tensors then sit under a key our network spells with '_')."""
    D = rec('ProjectedDiscriminator', {'feature_networks': rec('ModuleDict', {'a.b': rec('F_RandomProj')}),
                                       'discriminators': rec('ModuleDict', {'a.b': heads(1)})},
            backbones=['bb0', 'a.b'])
    msg = raised_message(infer_discriminator_config, ModuleView(D, 'D'), None, 64, error=ConversionError)
    assert msg == ('D: backbone names [\'a.b\'] contain ".", which StyleGAN-XL\'s ModuleDicts cannot hold; this is not '
                   'a pickle written by StyleGAN-XL')


def test_load_passes_extra_classes_to_the_reader(tmp_path, stem_tree):
    """Bug: extra_classes not passed on: a class the user vouches for is still refused."""
    path = dump(tmp_path / 'aug.pkl', {'G_ema': stem_tree, 'augment_pipe': upstream('my_pkg.aug.Pipe')()})
    with pytest.raises(legacy.RefusedGlobalError):
        legacy.load(path, components=('G_ema',))
    out = legacy.load(path, components=('G_ema',), extra_classes=[('my_pkg.aug', 'Pipe')])
    assert out.meta['augment_pipe'] == 'my_pkg.aug.Pipe (not converted)'


@pytest.mark.parametrize('case', ['proj_type', 'class', 'san'])
def test_discriminator_refusals_have_the_full_message(case):
    """Bugs: each message None or altered; the proj_type shown looked up under another name."""
    if case == 'proj_type':
        msg = raised_message(infer_discriminator_config, projected_d(proj_type=1), None, 64, error=ConversionError)
        assert msg == ("D.feature_networks.bb0: proj_type 1 is not supported; ours is CCM + CSM (proj_type 2, "
                       "StyleGAN-XL's setting)")
    elif case == 'class':
        view = ModuleView(rec('Discriminator'), 'D')
        msg = raised_message(infer_discriminator_config, view, None, 64, error=ConversionError)
        assert msg == 'D is a pg_modules.discriminator.Discriminator, not a projected discriminator'
    else:
        msg = raised_message(infer_discriminator_config, projected_d('san-cond'), None, 64, san=False,
                             error=ConversionError)
        assert msg == ('D has SAN heads (a StyleSAN-XL pickle); they have no exact plain equivalent. Load it with '
                       'san=True (or san=None)')


def test_newobj_with_arguments_that_are_not_a_tuple_is_refused(tmp_path):
    """Bug: the NEWOBJ message None or naming type(None)."""
    path = tmp_path / 'newobj.pkl'
    path.write_bytes(b'\x80\x02' + b'cpg_modules.blocks\nDownBlock\n' + b']\x81.')
    msg = raised_message(legacy.read_pickle, path, error=legacy.LegacyPickleError)
    assert msg == f'{path}: NEWOBJ arguments must be a tuple, got list'
