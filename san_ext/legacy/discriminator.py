"""Recorded projected discriminators (StyleGAN-XL plain heads or StyleSAN-XL SAN heads) -> ours.

Name map (upstream ``pg_modules`` / ``feature_networks`` -> ``san_ext.networks``), per backbone ``bb``:

============================================================  ==========================================
``feature_networks.bb.scratch.layer{i}_ccm.*``                ``feature_networks.bb.proj.ccm.{i}.*``
``feature_networks.bb.scratch.layer{i}_csm.out_conv.*``       ``feature_networks.bb.proj.csm.{i}.*``
ViT: ``pretrained.model.*``                                   ``pretrained.model.*`` (norm/heads dropped)
ViT: ``pretrained.layer{k}.3.*`` / ``.4.*``                   ``pretrained.reassemble.{k-1}.0.*`` / ``.1.*``
EfficientNet: ``pretrained.layer0.0`` / ``.1``                ``pretrained.model.conv_stem`` / ``.bn1``
EfficientNet: ``pretrained.layer{s}.{j}`` (blocks [0:2],      ``pretrained.model.blocks.{n}``
[2:3], [3:5], [5:9] after the stem)
``discriminators.bb.mini_discs.{i}.main.{j}.main.*``          same (DownBlocks)
plain uncond: ``...main.{last}.*`` (final SN conv)            ``...last_layer.*``
SAN: ``...last_layer.{weight,scale}``, ``...embed.*``         same; class rows cut to ``c_dim``
============================================================  ==========================================

Head conversion to a SAN target (``san=True``) from plain StyleGAN-XL heads keeps the function (as
:func:`san_ext.sanify` does): the unconditional last layer's effective spectral-norm weight W becomes
omega = W / ||W|| with scale ||W||; the conditional class vectors ``embed_proj(embed(c))`` depend on the class only,
so each becomes one SANEmbedding row (direction and scale). SAN heads cannot become plain ones (refused).
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import torch
import torch.nn.functional as F

from san_ext.networks import DiscriminatorConfig, ProjectedDiscriminator
from san_ext.networks.backbones import backbone_kind

from .convert import ConversionError, ConversionReport, load_converted
from .records import ModuleView

__all__ = ['convert_discriminator', 'heads_kind', 'infer_discriminator_config']

_DIFFAUG = 'color,translation,cutout'  # upstream's fixed policy when diffaug=True
_EFFNET_BLOCKS = {1: 2, 2: 3, 3: 5}     # upstream _make_efficientnet: first block index of layer1..3
_VIT_DROPPED = ('norm.', 'fc_norm.', 'head.', 'head_dist.', 'pre_logits.')


def heads_kind(view: ModuleView) -> tuple[bool, bool]:
    """(conditional, SAN) of the recorded mini-discriminators."""
    discs = [d for _, md in view.child('discriminators').children() for _, d in md.child('mini_discs').children()]
    if not discs:
        raise ConversionError(f'{view.path} has no mini-discriminators')
    cond = discs[0].class_name == 'SingleDiscCond'
    san = any(d.has_child('last_layer') or (d.has_child('embed') and d.child('embed').class_name == 'SANEmbedding')
              for d in discs)
    return cond, san


def infer_discriminator_config(view: ModuleView, c_dim: Optional[int], img_resolution: Optional[int],
                               san: Optional[bool] = None) -> tuple[DiscriminatorConfig, bool]:
    """Our DiscriminatorConfig for a recorded ProjectedDiscriminator, and whether its heads are SAN heads.

    ``c_dim`` / ``img_resolution`` come from the generator (the discriminator does not record them); ``san=None``
    keeps the pickle's head type.
    """
    if view.class_name != 'ProjectedDiscriminator':
        raise ConversionError(f'{view.path} is a {view.record.qualname}, not a projected discriminator')
    backbones = tuple(view.get('backbones') or ())
    dotted = [bb for bb in backbones if '.' in bb]
    if dotted:  # torch.nn.ModuleDict refuses such keys, so upstream cannot have written them
        raise ConversionError(f'{view.path}: backbone names {dotted} contain ".", which StyleGAN-XL\'s ModuleDicts '
                              'cannot hold; this is not a pickle written by StyleGAN-XL')
    cond, is_san = heads_kind(view)
    first_bb = view.child('feature_networks').child(backbones[0])
    if int(first_bb.get('proj_type', 2)) != 2:
        raise ConversionError(f'{first_bb.path}: proj_type {first_bb.get("proj_type")} is not supported; '
                              'ours is CCM + CSM (proj_type 2, StyleGAN-XL\'s setting)')
    mini = view.child('discriminators').child(backbones[0]).child('mini_discs')
    first = next(d for _, d in mini.children())
    cmap_dim = int(first.get('cmap_dim', 64))
    embed_dim = 320
    if cond and not is_san:
        embed_dim = int(first.child('embed').tensors()['weight'].shape[1])
    if cond and c_dim is None:
        c_dim = int(first.child('embed').tensors()['weight'].shape[0])
    if cond and not c_dim:
        raise ConversionError(f'{view.path} has conditional heads but the generator is unconditional (c_dim 0); '
                              'G and D come from different runs')
    target_san = is_san if san is None else bool(san)
    if is_san and not target_san:
        raise ConversionError(f'{view.path} has SAN heads (a StyleSAN-XL pickle); they have no exact plain '
                              'equivalent. Load it with san=True (or san=None)')
    cfg = DiscriminatorConfig(
        backbones=backbones, c_dim=int(c_dim) if cond else 0, img_resolution=int(img_resolution or 256),
        san=target_san, diffaug=_DIFFAUG if view.get('diffaug', True) else '', pretrained=False,
        num_discs=len(list(mini.children())), cout=int(first_bb.get('cout', 64)),
        expand=bool(first_bb.get('expand', True)), cmap_dim=cmap_dim, embed_dim=embed_dim)
    return cfg, is_san


# ---------------------------------------------------------------------------------------------------------------
# Feature networks.

def _backbone_key(rest: str, kind: str, report: ConversionReport, full: str) -> Optional[str]:
    """Our key (below ``pretrained.``) for upstream's ``pretrained.<rest>``; None when deliberately dropped."""
    if kind == 'vit':
        if rest.startswith('model.'):
            if rest[len('model.'):].startswith(_VIT_DROPPED):
                report.drop(full, 'ViT final norm / classifier heads: unused by the 4 hooked blocks')
                return None
            return rest
        m = re.fullmatch(r'layer([1-4])\.([34])\.(\w+)', rest)
        if m:
            return f'reassemble.{int(m.group(1)) - 1}.{int(m.group(2)) - 3}.{m.group(3)}'
        return rest
    m = re.fullmatch(r'layer([0-3])\.(\d+)\.(.+)', rest)
    if not m:
        return rest
    stage, idx, tail = int(m.group(1)), int(m.group(2)), m.group(3)
    if stage == 0:
        stem = {0: 'conv_stem', 1: 'bn1'}
        return f'model.{stem[idx]}.{tail}' if idx in stem else f'model.blocks.{idx - 3}.{tail}'
    return f'model.blocks.{_EFFNET_BLOCKS[stage] + idx}.{tail}'


def _feature_tensors(view: ModuleView, cfg: DiscriminatorConfig, report: ConversionReport) -> dict:
    out = {}
    for bb in cfg.backbones:
        kind = backbone_kind(bb)
        if kind not in ('vit', 'cnn'):
            raise ConversionError(f'backbone {bb!r}: converting its weights is not supported')
        for name, t in view.child('feature_networks').child(bb).tensors().items():
            full = f'feature_networks.{bb}.{name}'
            m = re.fullmatch(r'scratch\.layer(\d)_(ccm|csm)\.(?:out_conv\.)?(\w+)', name)
            if m:
                out[f'feature_networks.{bb}.proj.{m.group(2)}.{m.group(1)}.{m.group(3)}'] = t
            elif name.startswith('pretrained.'):
                ours = _backbone_key(name[len('pretrained.'):], kind, report, full)
                if ours is not None:
                    out[f'feature_networks.{bb}.pretrained.{ours}'] = t
            else:
                out[f'feature_networks.{bb}.{name}'] = t  # unknown: reported by the strict load
    return out


# ---------------------------------------------------------------------------------------------------------------
# Heads.

def _sn_weight(conv: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weight a spectral-norm conv uses in eval mode: weight_orig / (u^T W v) with the stored u, v."""
    w = conv['weight_orig']
    sigma = torch.dot(conv['weight_u'], w.reshape(w.shape[0], -1) @ conv['weight_v'])
    return w / sigma


def _split_direction(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows -> (unit directions, norms): the SAN parametrisation s * omega of the same vectors (SAN Eq. 7)."""
    norms = vectors.flatten(1).norm(dim=1).clamp_min(1e-12)
    return vectors / norms.view(-1, *([1] * (vectors.ndim - 1))), norms


def _class_vectors(disc: dict[str, torch.Tensor], c_dim: int) -> torch.Tensor:
    """``embed_proj(embed(c))`` for c < c_dim: equalized-lr FC (gain 1/sqrt(in)) + lrelu(0.2) * sqrt(2)."""
    e, w, b = disc['embed.weight'][:c_dim], disc['embed_proj.weight'], disc['embed_proj.bias']
    return F.leaky_relu(e @ (w / math.sqrt(w.shape[1])).t() + b, 0.2) * math.sqrt(2)  # [c_dim, cmap_dim]


def _head_tensors(disc: ModuleView, prefix: str, cfg: DiscriminatorConfig, is_san: bool) -> dict:
    t = disc.tensors()
    out = {f'{prefix}.{k}': v for k, v in t.items() if k.startswith(('main.', 'cls.'))}
    if cfg.c_dim == 0 and not is_san:  # plain SingleDisc: the final SN conv is the last entry of `main`
        last = max(int(k.split('.')[1]) for k in t if k.startswith('main.'))
        conv_prefix = f'main.{last}.'
        conv = {k.removeprefix(conv_prefix): v for k, v in t.items() if k.startswith(conv_prefix)}
        out = {k: v for k, v in out.items() if not k.startswith(f'{prefix}.{conv_prefix}')}
        if cfg.san:
            omega, scale = _split_direction(_sn_weight(conv))
            out.update({f'{prefix}.last_layer.weight': omega, f'{prefix}.last_layer.scale': scale})
        else:
            out.update({f'{prefix}.last_layer.{k}': v for k, v in conv.items()})
    elif cfg.c_dim == 0:
        out.update({f'{prefix}.{k}': v for k, v in t.items() if k.startswith('last_layer.')})
    elif is_san:
        out[f'{prefix}.embed.weight'] = t['embed.weight'][:cfg.c_dim]
        out[f'{prefix}.embed.scale'] = t['embed.scale'][:cfg.c_dim]
    elif cfg.san:
        omega, scale = _split_direction(_class_vectors(t, cfg.c_dim))
        out.update({f'{prefix}.embed.weight': omega, f'{prefix}.embed.scale': scale.unsqueeze(1)})
    else:
        out[f'{prefix}.embed.weight'] = t['embed.weight'][:cfg.c_dim]
        out.update({f'{prefix}.{k}': v for k, v in t.items() if k.startswith('embed_proj.')})
    return out


def convert_discriminator(record: Any, c_dim: Optional[int] = None, img_resolution: Optional[int] = None,
                          san: Optional[bool] = None, strict: bool = True
                          ) -> tuple[ProjectedDiscriminator, ConversionReport]:
    """Our ProjectedDiscriminator (eval mode, frozen; random-init backbones overwritten by the pickle's) and the
    conversion report."""
    view = ModuleView(record, 'D')
    cfg, is_san = infer_discriminator_config(view, c_dim, img_resolution, san)
    report = ConversionReport('D')
    tensors = _feature_tensors(view, cfg, report)
    for bb in cfg.backbones:
        for i, disc in view.child('discriminators').child(bb).child('mini_discs').children():
            tensors.update(_head_tensors(disc, f'discriminators.{bb}.mini_discs.{i}', cfg, is_san))
    for name, t in view.tensors().items():  # tensors outside the two trees: no rule maps them (strict refuses)
        if not name.startswith(('feature_networks.', 'discriminators.')):
            tensors[name] = t
    _describe_heads(cfg, is_san, report)
    D = ProjectedDiscriminator(cfg)
    load_converted(D, tensors, report, strict=strict)
    return D.eval().requires_grad_(False), report


def _describe_heads(cfg: DiscriminatorConfig, is_san: bool, report: ConversionReport) -> None:
    if cfg.san and not is_san:
        what = ('class projection embed_proj(embed(c)) -> SANEmbedding rows (direction, scale)' if cfg.c_dim else
                'last spectral-norm conv -> SANConv2d (direction W/||W||, scale ||W||)')
        report.rewritten.append(f'plain StyleGAN-XL heads -> SAN heads, same function: {what}')
    if cfg.c_dim:
        report.rewritten.append(f'class rows of every mini-disc cut to the first c_dim={cfg.c_dim} '
                                '(upstream always allocates 1000)')
