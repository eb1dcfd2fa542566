"""Projected discriminator: shapes, SAN gradient routing, frozen parts, DiffAugment, errors, parameter counts.

CPU only, random backbone weights (``pretrained=False``) and small timm models; no network access.
"""

from __future__ import annotations

import functools
import urllib.error

import pytest
import timm
import torch

from san_ext.layers import SANConv2d, SANEmbedding, is_san_layer, normalize_san_weights
from san_ext.networks import backbones as bb
from san_ext.networks.backbones import BackboneWeightsError, create_backbone
from san_ext.networks.diffaug import diff_augment, parse_policy
from san_ext.networks.discriminator import DiscriminatorConfig, ProjectedDiscriminator

SMALL = ('deit_tiny_distilled_patch16_224', 'tf_efficientnet_lite0')
B = 2


pytestmark = pytest.mark.usefixtures('one_thread')


def make_d(res: int = 16, c_dim: int = 10, san: bool = True, seed: int = 0, **kw) -> ProjectedDiscriminator:
    torch.manual_seed(seed)
    cfg = DiscriminatorConfig(backbones=SMALL, c_dim=c_dim, img_resolution=res, san=san, pretrained=False, **kw)
    return ProjectedDiscriminator(cfg)


@functools.cache
def cached_d(res: int = 16, c_dim: int = 10, san: bool = True) -> ProjectedDiscriminator:
    """Shared D for tests that do not step an optimizer (they reset grads and modes themselves)."""
    return make_d(res, c_dim, san)


def images(res: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, res, res, generator=g) * 2 - 1


def labels(c_dim: int):
    return torch.tensor([1, c_dim - 1]) if c_dim else None


# -- shapes ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('res,c_dim,san', [(16, 0, True), (16, 10, True), (16, 0, False), (16, 10, False),
                                           (32, 10, True)])
def test_output_shapes(res, c_dim, san):
    D = cached_d(res, c_dim, san).train()
    img, c = images(res), labels(c_dim)
    n = 2 * 4 * 4 * 4  # 2 backbones x 4 mini-discs x 4x4 logit map (inputs below 224 are resized to 224)
    with torch.no_grad():
        if san:
            fun, dir_ = D(img, c, flg_train=True)
            assert fun.shape == dir_.shape == (B, n)
        else:
            assert D(img, c).shape == (B, n)


def test_flg_train_values_equal_plain_logits_in_eval():
    D = cached_d(16, 10).eval()  # eval: no DiffAugment, BatchNorm running stats -> deterministic
    img, c = images(), labels(10)
    with torch.no_grad():
        out = D(img, c)
        fun, dir_ = D(img, c, flg_train=True)
        per = D.forward_per_backbone(img, torch.nn.functional.one_hot(c, 10).float())
    assert list(per) == list(SMALL) and all(v.shape == (B, 64) for v in per.values())
    torch.testing.assert_close(fun, out)
    torch.testing.assert_close(dir_, out)
    torch.testing.assert_close(torch.cat(list(per.values()), dim=1), out)  # one-hot labels = int ids


def test_backbone_strides_and_resize_rule():
    cnn = create_backbone('tf_efficientnet_lite0', pretrained=False)
    vit = create_backbone('deit_tiny_distilled_patch16_224', pretrained=False)
    assert vit.is_vit and not cnn.is_vit and vit.channels == (24, 48, 96, 192)
    with torch.no_grad():
        small = [f.shape[-1] for f in cnn(torch.zeros(1, 3, 32, 32))]  # resized to 224
        native = [f.shape[-1] for f in cnn(torch.zeros(1, 3, 256, 256))]  # >= 224: kept
        vit_sizes = [tuple(f.shape[1:]) for f in vit(torch.zeros(1, 3, 256, 256))]  # ViT: always 224
    assert small == [56, 28, 14, 7] and native == [64, 32, 16, 8]
    assert vit_sizes == [(24, 56, 56), (48, 28, 28), (96, 14, 14), (192, 7, 7)]


# -- SAN gradient routing through the whole D -----------------------------------------------------------------------
def _grads(D: ProjectedDiscriminator, logit: torch.Tensor) -> dict[str, torch.Tensor]:
    D.zero_grad(set_to_none=True)
    logit.backward(retain_graph=True)
    return {n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize('c_dim', [0, 10])
def test_san_grad_routing_fun_to_heads_and_scale_dir_to_directions_only(c_dim):
    D = cached_d(16, c_dim).train()
    img = images().requires_grad_(True)
    fun, dir_ = D(img, labels(c_dim), flg_train=True)
    san_types = (SANEmbedding,) if c_dim else (SANConv2d,)
    san_layers = [n for n, m in D.named_modules() if is_san_layer(m)]
    assert len(san_layers) == 8 and all(isinstance(D.get_submodule(n), san_types) for n in san_layers)
    directions = {f'{n}.weight' for n in san_layers}
    heads = {f'discriminators.{n}' for n, _ in D.discriminators.named_parameters()}
    # fun: every head parameter (convs, BatchNorm, cls, SAN scale) but never the SAN directions or frozen parts.
    assert set(_grads(D, fun.square().mean())) == heads - directions
    img.grad = None
    # dir: the SAN directions only; no head, no scale, no frozen part, not the image.
    assert set(_grads(D, dir_.mean())) == directions
    assert img.grad is None or not img.grad.abs().sum()
    D.zero_grad(set_to_none=True)


def test_g_phase_grad_reaches_image_through_frozen_backbones():
    D = cached_d(16, 10).train()
    D.zero_grad(set_to_none=True)
    img = images().requires_grad_(True)
    D(img, labels(10)).mean().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0 and torch.isfinite(img.grad).all()
    assert all(p.grad is None for p in D.feature_networks.parameters())


@pytest.mark.parametrize('c_dim', [0, 10])
def test_normalize_san_weights_finds_every_san_layer(c_dim):
    D = cached_d(16, c_dim)
    layers = [m for m in D.modules() if is_san_layer(m)]
    with torch.no_grad():
        for m in layers:
            m.weight.mul_(3.0)
    assert normalize_san_weights(D) == 8 == len(layers)
    for m in layers:
        norms = m.weight.flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


def test_plain_heads_have_no_san_layers():
    assert normalize_san_weights(cached_d(16, 10, san=False)) == 0


# -- frozen parts, BatchNorm, train/eval ----------------------------------------------------------------------------
def test_frozen_parts_bit_identical_after_adam_step():
    D = make_d(16, 10)
    D.train().requires_grad_(True)  # a loop may call this; backbones and projections must stay frozen
    assert all(not p.requires_grad for p in D.feature_networks.parameters())
    assert {id(p) for p in D.parameters() if p.requires_grad} == {id(p) for p in D.trainable_parameters()}
    frozen = {k: v.clone() for k, v in D.feature_networks.state_dict().items()}
    heads = {k: v.clone() for k, v in D.discriminators.named_parameters()}
    opt = torch.optim.Adam(D.parameters(), lr=1e-2, betas=(0.0, 0.99))
    fun, dir_ = D(images(), labels(10), flg_train=True)
    (torch.relu(1 - fun).mean() - dir_.mean()).backward()
    opt.step()
    for k, v in D.feature_networks.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    changed = [k for k, p in D.discriminators.named_parameters() if not torch.equal(p, heads[k])]
    assert len(changed) == len(heads)


def test_train_mode_diffaug_per_backbone_batchnorm_updates_backbones_stay_eval(monkeypatch):
    import san_ext.networks.discriminator as dmod
    calls = []

    def spy(x, policy, generator=None):
        calls.append(generator)
        return diff_augment(x, policy, generator)
    monkeypatch.setattr(dmod, 'diff_augment', spy)
    D = cached_d(16, 0).train()
    assert all(not m.training for net in D.feature_networks.values() for m in net.modules())
    assert all(m.training for m in D.discriminators.modules())
    bn = next(m for m in D.discriminators.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before, steps = bn.running_mean.clone(), bn.num_batches_tracked.item()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        D(images(), generator=g)
    assert calls == [g, g]  # a fresh augmentation for each backbone
    assert bn.num_batches_tracked.item() == steps + 1 and not torch.equal(bn.running_mean, before)
    with torch.no_grad():
        D.eval()(images())
    assert len(calls) == 2  # no augmentation in eval mode


# -- DiffAugment ----------------------------------------------------------------------------------------------------
def test_diff_augment_reproducible_differentiable_and_zero_filled():
    x = images(32).requires_grad_(True)
    y1 = diff_augment(x, generator=torch.Generator().manual_seed(0))
    y2 = diff_augment(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y1, y2)
    y1.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(64, 1, 40, 40)
    shifted = diff_augment(ones, 'translation', torch.Generator().manual_seed(1))
    assert set(shifted.unique().tolist()) <= {0.0, 1.0}
    assert (shifted.flatten(1).mean(1) >= (1 - 5 / 40) ** 2 - 1e-6).all()  # at most 5 px = 1/8 of 40 per axis
    cut = diff_augment(ones, 'cutout', torch.Generator().manual_seed(2))
    assert ((1 - cut.flatten(1).mean(1)) <= 8 * 8 / 1600 + 1e-6).all()  # one square of side 0.2 * 40
    assert torch.equal(diff_augment(ones, ''), ones)
    assert parse_policy(' color , cutout') == ('color', 'cutout')


# -- errors ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def cond_d():
    return cached_d(16, 10)


def test_class_id_out_of_range(cond_d):
    with pytest.raises(ValueError, match=r'class ids must be in 0\.\.9'):
        cond_d(images(), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r'one-hot \[B, 10\]'):
        cond_d(images(), torch.zeros(B, 7))
    with pytest.raises(ValueError, match='needs labels'):
        cond_d(images())


def test_wrong_image_shape(cond_d):
    with pytest.raises(ValueError, match=r'images \[B, 3, 16, 16\]'):
        cond_d(torch.zeros(B, 4, 16, 16), labels(10))
    with pytest.raises(ValueError, match=r'images \[B, 3, 16, 16\]'):
        cond_d(torch.zeros(B, 3, 32, 32), labels(10))


def test_flg_train_with_plain_heads_fails():
    D = cached_d(16, 0, san=False)
    with pytest.raises(ValueError, match='needs san=True'):
        D(images(), flg_train=True)


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(ValueError, match='close matches: .*deit_tiny_distilled_patch16_224'):
        create_backbone('deit_tiny_distiled_patch16_224', pretrained=False)
    with pytest.raises(ValueError, match='unknown timm backbone'):
        ProjectedDiscriminator(DiscriminatorConfig(backbones=('no_such_net',), pretrained=False))


def test_bad_config():
    with pytest.raises(ValueError, match='unknown DiffAugment op'):
        DiscriminatorConfig(diffaug='color,zoom')
    with pytest.raises(ValueError, match='num_discs'):
        DiscriminatorConfig(num_discs=5)
    with pytest.raises(ValueError, match='non-empty sequence'):
        DiscriminatorConfig(backbones='tf_efficientnet_lite0')


# -- weights: offline error, local checkpoint ------------------------------------------------------------------------
@pytest.mark.parametrize('name', SMALL)
def test_offline_pretrained_error_names_file_and_cache(name, tmp_path, monkeypatch):
    hf_constants = pytest.importorskip('huggingface_hub.constants')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(BackboneWeightsError) as info:
        create_backbone(name, pretrained=True, cache_dir=tmp_path)
    msg = str(info.value)
    cfg = timm.models.get_pretrained_cfg(name)
    assert name in msg and cfg.hf_hub_id in msg and 'model.safetensors' in msg and str(tmp_path) in msg
    assert cfg.url.rsplit('/', 1)[-1] in msg and 'hub/checkpoints' in msg and 'checkpoint_path' in msg


def test_offline_error_on_the_torch_hub_url_path(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(timm.models._builder, 'has_hf_hub', lambda necessary=False: False)
    monkeypatch.setattr(timm.models._builder, 'load_state_dict_from_url', no_network)
    with pytest.raises(BackboneWeightsError, match='tf_efficientnet_lite0-0aa007d2.pth'):
        create_backbone('tf_efficientnet_lite0', pretrained=True)


@pytest.mark.parametrize('name,key', [('tf_efficientnet_lite0', 'conv_stem.weight'),
                                      ('deit_tiny_distilled_patch16_224', 'patch_embed.proj.weight')])
def test_checkpoint_path_loads_local_weights(name, key, tmp_path):
    torch.manual_seed(5)
    state = timm.create_model(name, pretrained=False).state_dict()
    path = tmp_path / 'weights.pth'
    torch.save(state, path)
    net = create_backbone(name, checkpoint_path=path)
    assert torch.equal(net.model.state_dict()[key], state[key])
    with pytest.raises(FileNotFoundError, match='does not exist'):
        create_backbone(name, checkpoint_path=tmp_path / 'missing.pth')


# -- parameter counts against upstream StyleGAN-XL @ 4241ff9 and sony/san's stylesan-xl, measured on CPU -----------
@pytest.mark.parametrize('san,expected', [(True, 25_311_424), (False, 27_515_776)])
def test_default_d_head_param_count_matches_upstream(san, expected):
    torch.manual_seed(0)
    D = ProjectedDiscriminator(DiscriminatorConfig(c_dim=1000, pretrained=False, san=san))
    assert sum(p.numel() for p in D.trainable_parameters()) == expected  # SAN: 25.311M, plain: 27.516M
    proj = [sum(p.numel() for p in net.proj.parameters()) for net in D.feature_networks.values()]
    assert proj == [699_840, 376_768]  # random CCM + CSM: 0.700M (DeiT-B), 0.377M (lite0)
    assert normalize_san_weights(D) == (8 if san else 0)


def test_backbone_kind_registry():
    assert bb.backbone_kind('deit_base_distilled_patch16_224') == 'vit'
    assert bb.backbone_kind('vit_tiny_patch16_224') == 'vit'
    assert bb.backbone_kind('tf_efficientnet_lite0') == 'cnn'
    assert set(bb.list_backbone_kinds()) >= {'cnn', 'vit'}
    with pytest.raises(ValueError, match='unknown backbone kind'):
        create_backbone('tf_efficientnet_lite0', pretrained=False, kind='rnn')
