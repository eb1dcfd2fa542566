"""DINOv2 ViT-L/14 features for FD_DINOv2 (Stein et al. 2023, "Exposing flaws of generative model evaluation
metrics"; EDM2, Karras et al. 2024): the CLS token after the final norm, 1024-d.

The recipe is torch-fidelity 0.4's ``FeatureExtractorDinoV2``: uint8 images -> float32, TF1-style bilinear resize to
224 (no antialias), ImageNet mean/std on the 0..255 scale, ``dinov2_vitl14``'s CLS token. torch-fidelity builds the
network with ``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')``, which fetches and runs the repository's
current Python code and downloads the weights; its ``feature_extractor_weights_path`` raises NotImplementedError. We
keep its preprocessing (its own resize function, checked against its forward in the tests) and build the same
network from timm's ``VisionTransformer`` with the official ``dinov2_vitl14_pretrain.pth`` loaded as a plain state
dict: offline, pinned, and no code from the internet.

Architecture (facebookresearch/dinov2: ``dinov2/hub/backbones.py``, ``dinov2/models/vision_transformer.py``): patch
14, pre-norm blocks with LayerScale, LayerNorm eps 1e-6, exact GELU MLP of ratio 4, qkv bias, a class token whose
position embedding is added after concatenation; positions are learned on a 37 x 37 grid (518 px). DINOv2 resamples
them to the input's grid on every call (bicubic, no antialias, scale factor ``(grid + 0.1) / 37``); inputs here are
always 224 px, so we resample once at load, the same float32 operation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureExtractor, _Extractor, _import_torch_fidelity, register_extractor
from .weights import DINOV2_VITL14_WEIGHTS, WeightFile, find_weights, load_state_dict

__all__ = ['DINOV2_INPUT', 'DINOV2_VITL14', 'DinoV2Arch', 'DinoV2Features', 'build_dinov2_vit', 'dinov2_features',
           'load_dinov2_state', 'resample_dinov2_pos_embed']

PathLike = Union[str, os.PathLike]
DINOV2_INPUT = 224  # torch-fidelity's FeatureExtractorDinoV2.INPUT_IMAGE_SIZE
_INTERPOLATE_OFFSET = 0.1  # DINOv2's interpolate_offset for its released backbones
_MEAN = (0.485, 0.456, 0.406)  # ImageNet mean/std, as torch-fidelity and DINOv2 use them
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DinoV2Arch:
    """A DINOv2 backbone's shape. Every released size uses 64-wide heads and 518 px (37 x 37) pretraining."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 14
    pretrain_grid: int = 37  # positions stored in the checkpoint: pretrain_grid**2 + 1 (the class token)
    mlp_ratio: float = 4.0


DINOV2_VITL14 = DinoV2Arch('vitl14', embed_dim=1024, depth=24, num_heads=16)


def build_dinov2_vit(arch: DinoV2Arch = DINOV2_VITL14, device: Union[str, torch.device] = 'meta') -> nn.Module:
    """timm ``VisionTransformer`` with DINOv2's architecture at 224 px input, returning the normed CLS token
    [N, embed_dim]. Built on the meta device by default (shapes only, no memory, no init cost): a checkpoint then
    supplies every tensor through :func:`load_dinov2_state`."""
    from timm.models.vision_transformer import VisionTransformer

    with torch.device(device):
        return VisionTransformer(img_size=DINOV2_INPUT, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
                                 depth=arch.depth, num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=True,
                                 init_values=1.0, class_token=True, no_embed_class=False, global_pool='token',
                                 num_classes=0, dynamic_img_size=False, weight_init='skip')


def resample_dinov2_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Position embeddings [1, 1 + G*G, D] of a DINOv2 checkpoint resampled to ``grid`` x ``grid`` patches as
    DINOv2's ``interpolate_pos_encoding`` does at run time: bicubic, no antialias, scale factor (grid + 0.1) / G
    (the "+0.1" is DINO's historical offset; it changes the sampling positions, not the output size)."""
    n = pos_embed.shape[1] - 1
    old = int(round(n ** 0.5))
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or old * old != n:
        raise ValueError(f'pos_embed must be [1, 1 + G*G, D], got {list(pos_embed.shape)}')
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:].float()
    scale = (grid + _INTERPOLATE_OFFSET) / old
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)  # [1, D, G, G]
    patches = F.interpolate(patches, scale_factor=(scale, scale), mode='bicubic', antialias=False)
    if patches.shape[-2:] != (grid, grid):
        raise ValueError(f'resampling {old}x{old} positions gave {list(patches.shape[-2:])}, not {grid}x{grid}')
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos_embed.dtype)
    return torch.cat([cls, patches], dim=1)


def load_dinov2_state(vit: nn.Module, state: dict, arch: DinoV2Arch = DINOV2_VITL14, source: str = 'state') -> None:
    """Load an official DINOv2 checkpoint (``dinov2_vitl14_pretrain.pth`` layout: ``cls_token``, ``pos_embed``,
    ``mask_token``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,
    ls2.gamma}``, ``norm``) into :func:`build_dinov2_vit`'s module, strictly; anything else fails naming ``source``.
    ``mask_token`` (used only in training) is dropped and the positions are resampled to the 224 px grid."""
    state = dict(state)
    state.pop('mask_token', None)
    expected = 1 + arch.pretrain_grid ** 2
    pos = state.get('pos_embed')
    if not isinstance(pos, torch.Tensor) or pos.shape != (1, expected, arch.embed_dim):
        got = list(pos.shape) if isinstance(pos, torch.Tensor) else None
        raise ValueError(f'{source} is not a DINOv2 {arch.name} checkpoint: pos_embed is {got}, expected '
                         f'[1, {expected}, {arch.embed_dim}]')
    state['pos_embed'] = resample_dinov2_pos_embed(pos, DINOV2_INPUT // arch.patch_size)
    try:
        vit.load_state_dict(state, strict=True, assign=True)  # assign: the module may hold meta tensors
    except RuntimeError as err:
        raise ValueError(f'{source} is not a DINOv2 {arch.name} checkpoint: {err}') from err
    left = [k for k, t in [*vit.named_parameters(), *vit.named_buffers()] if t.is_meta and not pos.is_meta]
    if left:
        raise ValueError(f'{source}: the DINOv2 module still has unloaded tensors {left[:3]}')


class DinoV2Features(nn.Module):
    """torch-fidelity 0.4's DINOv2 preprocessing around a backbone: uint8 [N, 3, H, W] -> float32, TF1 bilinear to
    224 (``resize='tf1-bilinear'``; ``'bicubic-aa'`` is EDM2's ``resize_mode='torch'``: torch bicubic with antialias),
    ImageNet normalisation on 0..255, backbone -> CLS features [N, D]."""

    def __init__(self, vit: nn.Module, resize: str = 'tf1-bilinear') -> None:
        super().__init__()
        if resize not in ('tf1-bilinear', 'bicubic-aa'):
            raise ValueError(f"resize must be 'tf1-bilinear' or 'bicubic-aa', got {resize!r}")
        self.vit, self.resize = vit, resize
        # 255 * m in Python floats, then float32: the constants torch-fidelity passes to torchvision's normalize
        self.register_buffer('mean', torch.tensor([255 * m for m in _MEAN]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor([255 * s for s in _STD]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)  # [N, 3, H, W] in 0..255
        if self.resize == 'tf1-bilinear':
            _, interp = _import_torch_fidelity()
            x = interp.interpolate_bilinear_2d_like_tensorflow1x(x, size=(DINOV2_INPUT, DINOV2_INPUT),
                                                                 align_corners=False)
        else:
            x = F.interpolate(x, size=(DINOV2_INPUT, DINOV2_INPUT), mode='bicubic', antialias=True)
        return self.vit((x - self.mean) / self.std)  # [N, D]


def dinov2_features(name: str, weights: Optional[PathLike] = None, arch: DinoV2Arch = DINOV2_VITL14,
                    resize: str = 'tf1-bilinear', spec: WeightFile = DINOV2_VITL14_WEIGHTS) -> FeatureExtractor:
    """A DINOv2 extractor named ``name`` from a local weight file (``weights``: a file or a folder; else the search
    of :func:`~san_ext.metrics.weights.find_weights`). ``arch`` other than ViT-L/14 is for tests and other sizes."""
    path = find_weights(spec, weights)
    state, sha = load_state_dict(spec, path)
    vit = build_dinov2_vit(arch)
    load_dinov2_state(vit, state, arch, source=str(path))
    net = DinoV2Features(vit, resize).requires_grad_(False)
    version = f'dinov2-{arch.name}-lvd142m/{sha[:8]}/cls'
    return _Extractor(net, name, arch.embed_dim, version, f'{resize}-{DINOV2_INPUT}').eval()


@register_extractor('dinov2', weights=DINOV2_VITL14_WEIGHTS)
def dinov2(weights: Optional[PathLike] = None, arch: DinoV2Arch = DINOV2_VITL14) -> FeatureExtractor:
    """DINOv2 ViT-L/14 CLS features, 1024-d, torch-fidelity 0.4's preprocessing (FD_DINOv2)."""
    return dinov2_features('dinov2', weights, arch, 'tf1-bilinear')


@register_extractor('dinov2_edm2', weights=DINOV2_VITL14_WEIGHTS)
def dinov2_edm2(weights: Optional[PathLike] = None, arch: DinoV2Arch = DINOV2_VITL14) -> FeatureExtractor:
    """DINOv2 ViT-L/14 CLS features with EDM2's resize (torch bicubic, antialias): EDM2 / dgm-eval's FD_DINOv2."""
    return dinov2_features('dinov2_edm2', weights, arch, 'bicubic-aa')
