"""Writers of upstream-format StyleGAN-XL / StyleSAN-XL pickles for tests/test_legacy.py (see its docstring).

Our small networks renamed to upstream's keys by a reverse mapping written here, separately from the library's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from san_ext.networks import DiscriminatorConfig, GeneratorConfig, ProjectedDiscriminator, SuperresConfig
from san_ext.networks import SuperresGenerator as SR
from san_ext.networks.generator import SYNTHESES

SMALL = GeneratorConfig(img_resolution=16, c_dim=10, channel_base=2048, channel_max=64, num_layers=4,
                        magnitude_ema_beta=0.5 ** (64 / 20000))
CHAIN = (SuperresConfig(4, 2), SuperresConfig(3, 4))
BACKBONES = ('deit_tiny_distilled_patch16_224', 'tf_efficientnet_lite0')
# Layer names upstream gave this config (cbase 4096, cmax 128 as its train.py passes them, syn_layers 4).
UPSTREAM_LAYER_NAMES = [
    ['L0_36_128', 'L1_36_128', 'L2_36_128', 'L3_16_128', 'L4_16_3'],
    ['L0_36_128', 'L1_36_128', 'L3_36_128', 'L4_52_128', 'L5_52_128', 'L6_32_128', 'L7_32_3'],
    ['L0_36_128', 'L1_36_128', 'L3_36_128', 'L4_52_128', 'L5_52_128', 'L6_148_32', 'L7_128_32', 'L8_128_3']]
# A few keys and shapes of upstream's conditional D with these backbones, and its tensor counts (plain / SAN heads).
UPSTREAM_D_KEYS = {
    'feature_networks.deit_tiny_distilled_patch16_224.pretrained.model.blocks.0.attn.qkv.weight': (576, 192),
    'feature_networks.deit_tiny_distilled_patch16_224.pretrained.layer1.4.weight': (24, 24, 4, 4),
    'feature_networks.deit_tiny_distilled_patch16_224.pretrained.layer4.4.weight': (192, 192, 3, 3),
    'feature_networks.tf_efficientnet_lite0.pretrained.layer0.0.weight': (32, 3, 3, 3),
    'feature_networks.tf_efficientnet_lite0.pretrained.layer2.1.2.conv_dw.weight': (672, 1, 5, 5),
    'feature_networks.tf_efficientnet_lite0.pretrained.layer3.1.0.conv_pwl.weight': (320, 1152, 1, 1),
    'feature_networks.tf_efficientnet_lite0.scratch.layer3_csm.out_conv.weight': (256, 512, 1, 1),
    'discriminators.deit_tiny_distilled_patch16_224.mini_discs.0.main.0.main.0.weight_orig': (64, 64, 4, 4),
    'discriminators.tf_efficientnet_lite0.mini_discs.3.cls.weight_orig': (64, 512, 4, 4),
}
UPSTREAM_D_COUNT = {False: 717, True: 709}
SG3, SG2 = 'training.networks_stylegan3_resetting', 'training.networks_stylegan2'
FAKE_SRC = {SG3: '# stand-in for the embedded module source\nclass SuperresGenerator: ...\n',
            SG2: '# stand-in for the embedded module source\nclass SynthesisBlock: ...\n'}


# ---------------------------------------------------------------------------------------------------------------
# Writing upstream-format pickles.

def _reconstruct_persistent_obj(meta):  # pickled by name only, as torch_utils.persistence's
    raise AssertionError('never called')


_reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
EasyDict = type('EasyDict', (dict,), {'__module__': 'dnnlib.util'})
_FAKES: dict[str, type] = {}


def upstream(qualname: str) -> type:
    """An nn.Module class that pickles as ``qualname`` (registered in sys.modules while a pickle is written)."""
    if qualname.startswith('torch.nn.'):
        return getattr(nn, qualname.rsplit('.', 1)[1])
    if qualname not in _FAKES:
        module, _, name = qualname.rpartition('.')
        _FAKES[qualname] = type(name, (nn.Module,), {'__module__': module, '__qualname__': name})
    return _FAKES[qualname]


def fake_function(qualname: str):
    """A function that pickles as ``qualname`` and must never run."""
    if qualname not in _FAKES:
        def f(*args):
            raise AssertionError(f'{qualname} was called')
        f.__module__, _, f.__qualname__ = qualname.rpartition('.')
        f.__name__ = f.__qualname__
        _FAKES[qualname] = f
    return _FAKES[qualname]


class Persistent(nn.Module):
    """Pickles like a @persistence.persistent_class object: (reconstruct function, meta with source and state)."""

    src = FAKE_SRC[SG3]

    def __reduce__(self):
        meta = dict(type='class', version=6, module_src=self.src, class_name=type(self).__name__,
                    state=self.__dict__.copy())
        return _reconstruct_persistent_obj, (meta,)


def persistent(name: str, module: str = SG3, **attrs) -> nn.Module:
    obj = type(name, (Persistent,), {'src': FAKE_SRC[module]})()
    obj.__dict__.update(attrs)
    return obj


@contextlib.contextmanager
def upstream_modules():
    names = {q: c for q, c in _FAKES.items()}
    names.update({'torch_utils.persistence._reconstruct_persistent_obj': _reconstruct_persistent_obj,
                  'dnnlib.util.EasyDict': EasyDict})
    with pytest.MonkeyPatch.context() as mp:
        for qualname, obj in names.items():
            module, _, name = qualname.rpartition('.')
            parts = module.split('.')
            for i in range(1, len(parts) + 1):
                if '.'.join(parts[:i]) not in sys.modules:
                    mp.setitem(sys.modules, '.'.join(parts[:i]), types.ModuleType('.'.join(parts[:i])))
            mp.setattr(sys.modules[module], name, obj, raising=False)
        yield


def dump(path: Path, data, protocol: int = 4) -> Path:
    with upstream_modules(), open(path, 'wb') as f:
        pickle.dump(data, f, protocol=protocol)
    return path


def empty(cls: type) -> nn.Module:
    obj = cls.__new__(cls)
    nn.Module.__init__(obj)
    return obj


_BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked', 'w_avg', 'magnitude_ema', 'up_filter',
            'down_filter', 'transform', 'freqs', 'phases')


def module_tree(flat: dict, root: nn.Module, class_of) -> nn.Module:
    """Nested modules (classes from ``class_of(path)``) holding upstream-named tensors; spectral-norm convs are real
    ``nn.utils.spectral_norm`` modules (their hooks get pickled too)."""
    sn: dict[nn.Module, dict] = {}
    for key, t in flat.items():
        path, _, leaf = key.rpartition('.')
        node, walked = root, []
        for part in path.split('.') if path else []:
            walked.append(part)
            if part not in node._modules:
                node.add_module(part, class_of('.'.join(walked)))
            node = node._modules[part]
        if leaf in ('weight_orig', 'weight_u', 'weight_v'):
            sn.setdefault(node, {})[leaf] = t
        elif leaf in _BUFFERS:
            node.register_buffer(leaf, t.clone())
        else:
            node.register_parameter(leaf, nn.Parameter(t.clone(), requires_grad=t.is_floating_point()))
    for node, ts in sn.items():
        node.register_parameter('weight', nn.Parameter(ts['weight_orig'].clone()))
        nn.utils.spectral_norm(node)
        with torch.no_grad():
            node.weight_u.copy_(ts['weight_u'])
            node.weight_v.copy_(ts['weight_v'])
    return root


# -- generator: ours -> upstream --------------------------------------------------------------------------------
def _sub(sd: dict, prefix: str, skip: str = '~') -> dict:
    return {n[len(prefix):]: v for n, v in sd.items() if n.startswith(prefix) and not n[len(prefix):].startswith(skip)}


def _fc(sd: dict, prefix: str) -> nn.Module:
    return module_tree(_sub(sd, prefix), persistent('FullyConnectedLayer'), None)


def upstream_mapping(G: nn.Module, sd: dict) -> nn.Module:
    cfg = G.cfg
    mapping = persistent('MappingNetwork', z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=G.num_ws,
                         num_layers=2, w_avg_beta=cfg.w_avg_beta,
                         _init_kwargs=dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_layers + 2,
                                           rand_embedding=False, num_layers=2))
    table = torch.randn(1000, cfg.embed_dim)  # upstream always loads all 1000 lite0 rows, conditional or not
    if cfg.c_dim:
        table[:cfg.c_dim] = sd['mapping.embed.weight']
    mapping.embed = nn.Embedding(1000, cfg.embed_dim, _weight=table)
    mapping.embed_proj = _fc(sd, 'mapping.embed_proj.') if cfg.c_dim else None
    mapping.fc0, mapping.fc1 = _fc(sd, 'mapping.fc0.'), _fc(sd, 'mapping.fc1.')
    mapping.register_buffer('w_avg', sd['mapping.w_avg'] if cfg.c_dim else sd['mapping.w_avg'][0])
    return mapping


def upstream_layer(G: nn.Module, name: str, sd: dict) -> nn.Module:
    """A SynthesisLayer record with the attributes upstream's constructor sets (sizes as numpy pairs, etc.)."""
    layer, s = getattr(G.synthesis, name), getattr(G.synthesis, name).spec
    up = persistent('SynthesisLayer', w_dim=G.w_dim, is_torgb=s.is_torgb, is_critically_sampled=s.is_critically_sampled,
                    use_fp16=np.bool_(s.use_fp16), in_channels=s.in_channels, out_channels=s.out_channels,
                    in_size=np.broadcast_to(np.asarray(s.in_size), [2]),
                    out_size=np.broadcast_to(np.asarray(s.out_size), [2]), in_sampling_rate=s.in_sampling_rate,
                    out_sampling_rate=s.out_sampling_rate, in_cutoff=np.float64(s.in_cutoff),
                    out_cutoff=np.float64(s.out_cutoff), in_half_width=np.float64(s.in_half_width),
                    out_half_width=np.float64(s.out_half_width), conv_kernel=layer.conv_kernel, conv_clamp=256,
                    up_factor=layer.up_factor, down_factor=layer.down_factor, padding=list(layer.padding))
    module_tree(_sub(sd, f'synthesis.{name}.', skip='affine.'), up, None)
    for f in ('up_filter', 'down_filter'):
        if getattr(layer, f) is None:
            up.register_buffer(f, None)
    up.affine = _fc(sd, f'synthesis.{name}.affine.')
    return up


def upstream_synthesis(G: nn.Module, sd: dict) -> nn.Module:
    cfg, k, inp = G.cfg, SYNTHESES[G.cfg.synthesis], G.synthesis.input
    syn = persistent('SynthesisNetwork', layer_names=list(G.synthesis.layer_names), num_ws=G.num_ws, w_dim=cfg.w_dim,
                     img_resolution=G.img_resolution, num_critical=2, _init_kwargs=dict(
                         w_dim=cfg.w_dim, img_resolution=cfg.img_resolution, img_channels=3,
                         channel_base=k * cfg.channel_base, channel_max=k * cfg.channel_max,
                         magnitude_ema_beta=cfg.magnitude_ema_beta, conv_kernel=3, use_radial_filters=False,
                         num_layers=cfg.num_layers))
    syn.input = module_tree(_sub(sd, 'synthesis.input.', skip='affine.'), persistent(
        'SynthesisInput', w_dim=cfg.w_dim, channels=inp.channels, size=np.broadcast_to(np.asarray(inp.size), [2]),
        sampling_rate=inp.sampling_rate, bandwidth=inp.bandwidth), None)
    syn.input.affine = _fc(sd, 'synthesis.input.affine.')
    for name in G.synthesis.layer_names:
        setattr(syn, name, upstream_layer(G, name, sd))
    return syn


def upstream_generator(G: nn.Module) -> nn.Module:
    """Upstream's Generator / SuperresGenerator record tree for our G: names, attributes and _init_kwargs as
    upstream's constructors set them (channel widths passed already doubled for config T)."""
    cfg, sd = G.cfg, G.state_dict()
    if not G.stages:
        root = persistent('Generator', img_resolution=G.img_resolution, _init_kwargs=dict(
            z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=EasyDict(rand_embedding=False, num_layers=2),
            c_dim=cfg.c_dim, img_resolution=cfg.img_resolution, img_channels=3))
    else:
        last = G.stages[-1]
        root = persistent('SuperresGenerator', img_resolution=G.img_resolution, up_factor=last.up_factor,
                          _init_kwargs=dict(img_resolution=G.img_resolution, path_stem='stem.pkl',
                                            head_layers=last.head_layers, up_factor=last.up_factor, c_dim=cfg.c_dim,
                                            img_channels=3))
    root.mapping, root.synthesis = upstream_mapping(G, sd), upstream_synthesis(G, sd)
    return root


# -- discriminator: ours -> upstream ----------------------------------------------------------------------------
MAIN_LEN = 4  # DownBlocks of mini-disc 0 (128 -> 8); mini-disc i has 4 - i


def upstream_d_key(key: str, san_pickle: bool) -> str:
    """Reverse of the name map in san_ext.legacy.discriminator, written out independently."""
    rules = [(r'(feature_networks\.[^.]+)\.proj\.(ccm|csm)\.(\d)\.(\w+)',
              lambda m: f'{m[1]}.scratch.layer{m[3]}_{m[2]}.{"out_conv." if m[2] == "csm" else ""}{m[4]}'),
             (r'(.*)\.pretrained\.reassemble\.(\d)\.(\d)\.(\w+)',
              lambda m: f'{m[1]}.pretrained.layer{int(m[2]) + 1}.{int(m[3]) + 3}.{m[4]}'),
             (r'(.*lite0\.pretrained)\.model\.conv_stem\.(.*)', lambda m: f'{m[1]}.layer0.0.{m[2]}'),
             (r'(.*lite0\.pretrained)\.model\.bn1\.(.*)', lambda m: f'{m[1]}.layer0.1.{m[2]}'),
             (r'(.*lite0\.pretrained)\.model\.blocks\.(\d)\.(.*)', lambda m: '{}.layer{}.{}.{}'.format(
                 m[1], *{0: (0, 3), 1: (0, 4), 2: (1, 0), 3: (2, 0), 4: (2, 1), 5: (3, 0), 6: (3, 1)}[int(m[2])],
                 m[3])),
             (r'(.*mini_discs\.(\d))\.last_layer\.(.*)',  # plain SingleDisc: the final SN conv closes `main`
              lambda m: m[0] if san_pickle else f'{m[1]}.main.{MAIN_LEN - int(m[2])}.{m[3]}')]
    for pattern, fn in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return fn(m)
    return key


_D_FAKES = [(r'feature_networks|discriminators|.*mini_discs', 'torch.nn.ModuleDict'),
              (r'feature_networks\.[^.]+', 'pg_modules.projector.F_RandomProj'),
              (r'.*\.(pretrained|scratch)', 'torch.nn.Module'),
              (r'.*_csm', 'pg_modules.blocks.FeatureFusionBlock'),
              (r'.*\.pretrained\.model', 'timm.models.vision_transformer.VisionTransformer'),
              (r'.*\.patch_embed', 'timm.models.layers.patch_embed.PatchEmbed'),
              (r'.*model\.blocks', 'torch.nn.Sequential'),
              (r'.*model\.blocks\.\d+', 'timm.models.vision_transformer.Block'),
              (r'.*\.attn', 'timm.models.vision_transformer.Attention'),
              (r'.*\.mlp', 'timm.models.layers.mlp.Mlp'),
              (r'.*model\.(norm|blocks\.\d+\.norm\d)', 'torch.nn.LayerNorm'),
              (r'.*\.(qkv|attn\.proj|fc1|fc2|head|head_dist)', 'torch.nn.Linear'),
              (r'.*pretrained\.layer\d', 'torch.nn.Sequential'),
              (r'.*pretrained\.layer[12]\.4', 'torch.nn.ConvTranspose2d'),
              (r'.*lite0\.pretrained\.layer(0\.[34]|[123]\.\d)', 'torch.nn.Sequential'),
              (r'.*lite0.*layer0\.3\.0', 'timm.models.efficientnet_blocks.DepthwiseSeparableConv'),
              (r'.*lite0.*layer([123]\.\d|0\.4)\.\d', 'timm.models.efficientnet_blocks.InvertedResidual'),
              (r'.*\.bn\d|.*layer0\.1|.*main\.\d\.main\.1', 'torch.nn.BatchNorm2d'),
              (r'.*\.layer0\.0|.*conv_dw', 'timm.models.layers.conv2d_same.Conv2dSame'),
              (r'discriminators\.[^.]+', 'pg_modules.discriminator.MultiScaleD'),
              (r'.*mini_discs\.\d\.main', 'torch.nn.Sequential'),
              (r'.*main\.\d\.main', 'torch.nn.Sequential'),
              (r'.*\.last_layer', 'pg_modules.san_modules.SANConv2d')]


def d_class_of(san_pickle: bool, cond: bool):
    """The class upstream's D has at each module path (the tensors do not depend on it; the allow-list does)."""
    def class_of(path: str) -> nn.Module:
        if re.fullmatch(r'.*mini_discs\.\d', path):
            return empty(upstream(f'pg_modules.discriminator.SingleDisc{"Cond" if cond else ""}'))
        if path.endswith('.embed'):
            return empty(upstream('pg_modules.san_modules.SANEmbedding') if san_pickle else nn.Embedding)
        if path.endswith('.embed_proj'):
            return persistent('FullyConnectedLayer', SG2)
        m = re.fullmatch(r'.*mini_discs\.(\d)\.main\.(\d)', path)
        if m:  # DownBlocks, then (plain unconditional heads) the final spectral-norm conv
            return empty(nn.Conv2d if int(m[2]) == MAIN_LEN - int(m[1]) else upstream('pg_modules.blocks.DownBlock'))
        found = [cls for pattern, cls in _D_FAKES if re.fullmatch(pattern, path)]
        return empty(upstream(found[-1]) if found else nn.Conv2d)
    return class_of


def upstream_discriminator(D: ProjectedDiscriminator, san_pickle: bool) -> nn.Module:
    cfg = D.cfg
    flat = {}
    for key, t in D.state_dict().items():
        key = upstream_d_key(key, san_pickle)
        if key.endswith(('embed.weight', 'embed.scale')):  # upstream always allocates 1000 class rows
            t = torch.cat([t, torch.randn(1000 - len(t), t.shape[1])])
        flat[key] = t
    deit = BACKBONES[0]
    for name, shape in (('norm.weight', [192]), ('norm.bias', [192]), ('head.weight', [1000, 192]),
                        ('head.bias', [1000]), ('head_dist.weight', [1000, 192]), ('head_dist.bias', [1000])):
        flat[f'feature_networks.{deit}.pretrained.model.{name}'] = torch.randn(shape)  # upstream keeps the full ViT
    root = empty(upstream('pg_modules.discriminator.ProjectedDiscriminator'))
    root.backbones, root.diffaug, root.interp224 = list(cfg.backbones), True, True
    module_tree(flat, root, d_class_of(san_pickle, cfg.c_dim > 0))
    for bb in cfg.backbones:
        fn = root.feature_networks[bb]
        fn.backbone, fn.cout, fn.expand, fn.proj_type = bb, 64, True, 2
        if bb == deit:  # the DPT hooks: closures that dill pickles by value in real files; here plain attributes
            fn.pretrained.activations = {'1': torch.zeros(1, 3, 4)}
    return root


# ---------------------------------------------------------------------------------------------------------------
# Fixtures.

def make_G(stages=(), c_dim=10, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    G = SR.from_configs(dataclasses.replace(SMALL, c_dim=c_dim), stages)
    with torch.no_grad():  # every tensor random, buffers included, so equality checks mean something
        for t in [*G.parameters(), *G.buffers()]:
            t.copy_(torch.randn_like(t) * 0.1 + (1 if t.ndim == 0 else 0))
    return G.eval()


def make_D(san: bool, c_dim: int = 10) -> ProjectedDiscriminator:
    torch.manual_seed(1)
    D = ProjectedDiscriminator(DiscriminatorConfig(backbones=BACKBONES, c_dim=c_dim, img_resolution=32, san=san,
                                                   pretrained=False)).eval()
    with torch.no_grad():
        for name, t in D.named_buffers():
            if name.endswith('running_var'):
                t.uniform_(0.5, 1.5)
        for m in D.modules():  # converged power iteration, as in a trained D (fresh u, v make sigma arbitrary)
            if hasattr(m, 'weight_orig'):
                w, u = m.weight_orig.flatten(1), m.weight_u
                for _ in range(50):
                    v = nn.functional.normalize(w.t() @ u, dim=0)
                    u = nn.functional.normalize(w @ v, dim=0)
                m.weight_u.copy_(u)
                m.weight_v.copy_(v)
    return D


def snapshot_dict(G, G_ema, D):
    return {'G': upstream_generator(G), 'G_ema': upstream_generator(G_ema), 'D': D, 'augment_pipe': None,
            'training_set_kwargs': EasyDict(class_name='training.dataset.ImageFolderDataset', resolution=32),
            'progress': {'cur_nimg': torch.LongTensor([4000]), 'best_fid': 9999}}
