"""Projected discriminator (Projected GAN / StyleGAN-XL) with SAN or plain multi-scale heads.

Per backbone: DiffAugment (training mode only) -> frozen timm backbone -> random frozen CCM/CSM projection ->
4 trainable mini-discriminators. The logit maps of all mini-discriminators of all backbones are flattened and
concatenated into one tensor [B, N]; with SAN heads and ``flg_train=True`` the pair ``(fun, dir)`` (san_ext.layers).
Only the mini-discriminators train. After each D optimizer step call ``san_ext.layers.normalize_san_weights(D)``.

Unlike upstream, which returns a Python list with one entry per (backbone, sample), ``forward`` returns tensors;
``forward_per_backbone`` gives the per-backbone blocks for losses that reduce each backbone separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from .backbones import DEFAULT_BACKBONES, Backbone, RandomProjection, create_backbone
from .diffaug import diff_augment, parse_policy
from .heads import MultiScaleD

__all__ = ['DiscriminatorConfig', 'FeatureNetwork', 'ProjectedDiscriminator']

Logits = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Options of :class:`ProjectedDiscriminator`; the defaults are StyleGAN-XL's (with SAN heads)."""

    backbones: tuple[str, ...] = DEFAULT_BACKBONES  # timm model names
    c_dim: int = 0                          # number of classes; 0 = unconditional
    img_resolution: int = 256               # input images are [B, img_channels, img_resolution, img_resolution]
    img_channels: int = 3                   # 1 (grey, repeated to RGB for the backbones) or 3
    san: bool = True                        # SAN last layers (--loss NAME-san); False: plain spectral-norm heads
    diffaug: str = 'color,translation,cutout'  # DiffAugment policy, '' disables; applied in training mode only
    pretrained: bool = True                 # pretrained backbone weights through timm (False: random, tests only)
    checkpoint_paths: tuple[Optional[str], ...] = ()  # per backbone: local weight file or None; () = all None
    cache_dir: Optional[str] = None         # Hugging Face hub cache override for the backbone weights
    num_discs: int = 4                      # mini-discriminators per backbone (on the finest feature maps)
    cout: int = 64                          # CCM base width: cout * (1, 2, 4, 8) channels with expand
    expand: bool = True
    cmap_dim: int = 64                      # width of the class projection (conditional heads)
    embed_dim: int = 320                    # class-embedding width of the plain conditional head
    interp_size: int = 224                  # CNN inputs below this side are resized to it (ViTs: native size)

    def __post_init__(self) -> None:
        if isinstance(self.backbones, str) or not self.backbones:
            raise ValueError(f'backbones must be a non-empty sequence of timm model names, got {self.backbones!r}')
        object.__setattr__(self, 'backbones', tuple(self.backbones))
        object.__setattr__(self, 'checkpoint_paths', tuple(self.checkpoint_paths))
        if len({_module_key(b) for b in self.backbones}) != len(self.backbones):
            raise ValueError(f'backbones must be distinct, got {self.backbones}')
        if self.checkpoint_paths and len(self.checkpoint_paths) != len(self.backbones):
            raise ValueError(f'checkpoint_paths needs one entry (path or None) per backbone {self.backbones}, '
                             f'got {len(self.checkpoint_paths)}')
        if self.c_dim < 0:
            raise ValueError(f'c_dim must be >= 0, got {self.c_dim}')
        if self.img_channels not in (1, 3):
            raise ValueError(f'img_channels must be 1 or 3, got {self.img_channels}')
        if self.img_resolution < 8:
            raise ValueError(f'img_resolution must be >= 8, got {self.img_resolution}')
        if not 1 <= self.num_discs <= 4:
            raise ValueError(f'num_discs must be in 1..4, got {self.num_discs}')
        parse_policy(self.diffaug)


def _module_key(name: str) -> str:
    """ModuleDict key for a timm name ('.' is not allowed in module names, e.g. in 'model.tag')."""
    return name.replace('.', '_')


class FeatureNetwork(nn.Module):
    """Frozen backbone plus its frozen random projection: images [B, 3, H, W] -> 4 projected maps."""

    def __init__(self, backbone: Backbone, cout: int = 64, expand: bool = True) -> None:
        super().__init__()
        self.pretrained = backbone
        self.proj = RandomProjection(backbone.channels, cout, expand)
        self.out_channels = self.proj.out_channels
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureNetwork:
        return super().train(False)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        return self.proj(self.pretrained(img))  # 4 x [B, out_channels[i], H_i, W_i]


class ProjectedDiscriminator(nn.Module):
    """D(img, c, flg_train) of StyleGAN-XL: frozen feature networks, trainable multi-scale (SAN) heads."""

    def __init__(self, cfg: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self._policy = parse_policy(cfg.diffaug)
        paths = cfg.checkpoint_paths or (None,) * len(cfg.backbones)
        features, discs = {}, {}
        for name, path in zip(cfg.backbones, paths):
            backbone = create_backbone(name, pretrained=cfg.pretrained, checkpoint_path=path,
                                       cache_dir=cfg.cache_dir, interp_size=cfg.interp_size)
            net = FeatureNetwork(backbone, cfg.cout, cfg.expand)
            features[_module_key(name)] = net
            discs[_module_key(name)] = MultiScaleD(net.out_channels, cfg.c_dim, cfg.san, cfg.num_discs,
                                                   cfg.cmap_dim, cfg.embed_dim)
        self.feature_networks = nn.ModuleDict(features)
        self.discriminators = nn.ModuleDict(discs)

    # -- frozen parts stay frozen -------------------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> ProjectedDiscriminator:
        """Set requires_grad on the heads only; backbones and projections stay frozen (a loop may call this)."""
        super().requires_grad_(requires_grad)
        self.feature_networks.requires_grad_(False)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The mini-discriminators' parameters, the only ones D's optimizer needs."""
        return list(self.discriminators.parameters())

    # -- inputs ---------------------------------------------------------------------------------------------------
    def _check_img(self, img: torch.Tensor) -> None:
        cfg = self.cfg
        want = [cfg.img_channels, cfg.img_resolution, cfg.img_resolution]
        if not isinstance(img, torch.Tensor) or img.ndim != 4 or list(img.shape[1:]) != want:
            got = list(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f'D expects images [B, {", ".join(map(str, want))}] in [-1, 1], got {got}')
        if not img.is_floating_point():
            raise TypeError(f'D expects float images in [-1, 1], got dtype {img.dtype}')

    def class_ids(self, c: Optional[torch.Tensor], batch: int) -> Optional[torch.Tensor]:
        """c: one-hot (or soft) labels [B, c_dim] (StyleGAN convention) or int ids [B] -> ids [B]; None if uncond."""
        c_dim = self.cfg.c_dim
        if c_dim == 0:
            if c is not None and c.numel() > 0:
                raise ValueError(f'unconditional D (c_dim=0) got labels of shape {list(c.shape)}')
            return None
        if c is None:
            raise ValueError(f'conditional D (c_dim={c_dim}) needs labels c: one-hot [B, {c_dim}] or int ids [B]')
        if c.is_floating_point():
            if c.ndim != 2 or c.shape[1] != c_dim:
                raise ValueError(f'float labels must be one-hot [B, {c_dim}], got shape {list(c.shape)}; '
                                 'pass integer class ids as an int tensor')
            ids = c.argmax(dim=1)
        else:
            ids = c.reshape(-1) if c.ndim == 2 and c.shape[1] == 1 else c
            if ids.ndim != 1 or ids.dtype == torch.bool:
                raise ValueError(f'integer class ids must have shape [B], got {list(c.shape)} ({c.dtype})')
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c_dim):
                raise ValueError(f'class ids must be in 0..{c_dim - 1} (c_dim={c_dim}), '
                                 f'got values in [{int(ids.min())}, {int(ids.max())}]')
        if ids.shape[0] != batch:
            raise ValueError(f'{ids.shape[0]} labels for a batch of {batch} images')
        return ids.long()

    # -- forward --------------------------------------------------------------------------------------------------
    def forward_per_backbone(self, img: torch.Tensor, c: Optional[torch.Tensor] = None, flg_train: bool = False,
                             *, generator: Optional[torch.Generator] = None) -> dict[str, Logits]:
        """Like ``forward`` but a dict backbone name -> [B, N_backbone] (or ``(fun, dir)``), in config order."""
        self._check_img(img)
        if flg_train and not self.cfg.san:
            raise ValueError('flg_train=True returns SAN (fun, dir) logits and needs san=True heads; '
                             'this D has plain heads (DiscriminatorConfig.san=False)')
        ids = self.class_ids(c, img.shape[0])
        if self.cfg.img_channels == 1:
            img = img.expand(-1, 3, -1, -1)  # [B, 3, H, W] for the RGB backbones
        out = {}
        for name in self.cfg.backbones:
            key = _module_key(name)
            x = diff_augment(img, self._policy, generator) if self.training and self._policy else img
            feats = self.feature_networks[key](x)  # 4 x [B, C_i, H_i, W_i]
            out[name] = self.discriminators[key](feats, ids, flg_train)
        return out

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None, flg_train: bool = False,
                *, generator: Optional[torch.Generator] = None) -> Logits:
        """img [B, C, R, R] in [-1, 1], c one-hot [B, c_dim] or ids [B] -> logits [B, N], or ``(fun, dir)``.

        N sums over backbones and mini-discs of the logit-map sizes (64 per backbone for inputs below 224).
        ``generator`` seeds DiffAugment's draws (a fresh augmentation per backbone).
        """
        outs = list(self.forward_per_backbone(img, c, flg_train, generator=generator).values())
        if flg_train:
            return torch.cat([o[0] for o in outs], dim=1), torch.cat([o[1] for o in outs], dim=1)
        return torch.cat(outs, dim=1)
