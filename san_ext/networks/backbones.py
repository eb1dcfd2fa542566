"""Frozen timm feature backbones and the random projections of the projected discriminator.

A backbone maps images in [-1, 1] to 4 feature maps at strides 4, 8, 16 and 32 (Projected GAN, Sauer et al. 2021;
StyleGAN-XL keeps its setup). CNNs use timm's ``features_only`` stages; ViTs take 4 evenly spaced blocks through
timm 1.x's ``forward_intermediates`` and a random, frozen DPT-style reassembly (Ranftl et al. 2021) onto the 4
strides. A :class:`RandomProjection` (Projected GAN's "proj_type 2": cross-channel mixing CCM, then top-down
cross-scale mixing CSM) follows; it is randomly initialised, frozen, and kept in the state dict.

Weights come through timm's own loading (Hugging Face hub cache, or a local ``checkpoint_path``); nothing downloads
at import. Offline, :func:`create_backbone` fails with a message naming the file to place and where.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Optional, Union

import timm
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['DEFAULT_BACKBONES', 'REDUCTIONS', 'Backbone', 'BackboneWeightsError', 'CNNBackbone', 'RandomProjection',
           'ViTBackbone', 'backbone_kind', 'create_backbone', 'list_backbone_kinds', 'register_backbone_kind']

DEFAULT_BACKBONES = ('deit_base_distilled_patch16_224', 'tf_efficientnet_lite0')  # StyleGAN-XL's pair
REDUCTIONS = (4, 8, 16, 32)  # strides of the 4 feature maps every backbone returns

PathLike = Union[str, os.PathLike]


class BackboneWeightsError(RuntimeError):
    """Pretrained backbone weights could not be obtained (usually: offline and not in a cache)."""


class Backbone(nn.Module):
    """Frozen feature extractor: images [B, 3, H, W] in [-1, 1] -> 4 maps at strides 4/8/16/32.

    Subclasses set ``channels`` and implement ``_features``. The backbone stays in eval mode whatever ``train()``
    is asked, and its parameters never require grad; gradients still flow to the input image (G's step).
    """

    is_vit = False

    def __init__(self, name: str, model: nn.Module, interp_size: int) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.interp_size = interp_size
        self.channels: tuple[int, ...] = ()
        cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
        mean = cfg.get('mean', timm.data.IMAGENET_DEFAULT_MEAN)
        std = cfg.get('std', timm.data.IMAGENET_DEFAULT_STD)
        # Non-persistent: the statistics are part of the architecture, not learned state.
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Backbone:
        return super().train(False)  # always eval: frozen BatchNorm statistics, no dropout

    def target_size(self, res: int) -> Optional[int]:
        """Side the input is resized to (None: keep): ``interp_size`` below it; ViTs always their native size."""
        return self.interp_size if res < self.interp_size else None

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1] -> normalise with the model's mean/std -> bilinear resize (see ``target_size``)."""
        x = (img + 1) / 2
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        size = self.target_size(min(x.shape[-2:]))
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
        return x

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img [B, 3, H, W] in [-1, 1] -> 4 maps [B, channels[i], ~H'/r_i, ~W'/r_i] for r_i in (4, 8, 16, 32)."""
        return self._features(self.preprocess(img))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError


class CNNBackbone(Backbone):
    """A timm CNN built with ``features_only``; keeps the deepest stage at each of the strides 4, 8, 16, 32."""

    def __init__(self, name: str, pretrained: bool = True, checkpoint_path: Optional[PathLike] = None,
                 cache_dir: Optional[PathLike] = None, interp_size: int = 224) -> None:
        model = _create_timm_model(name, pretrained, checkpoint_path, cache_dir, features_only=True)
        picks = _pick_stages(name, model.feature_info.reduction())
        if max(picks) < len(model.feature_info.reduction()) - 1:
            # Rare: stages beyond stride 32 exist; rebuild with out_indices so they are not computed at all.
            absolute = [model.feature_info.out_indices[i] for i in picks]
            model = _create_timm_model(name, pretrained, checkpoint_path, cache_dir, features_only=True,
                                       out_indices=tuple(absolute))
            picks = list(range(len(absolute)))
        super().__init__(name, model, interp_size)
        self.picks = picks
        self.channels = tuple(model.feature_info.channels()[i] for i in picks)
        self._freeze()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.model(x)
        return [feats[i] for i in self.picks]


class ViTBackbone(Backbone):
    """A timm ViT: 4 evenly spaced blocks (2/5/8/11 of 12), reassembled DPT-style at strides 4/8/16/32.

    Block outputs [B, D, H/p, W/p] (prefix tokens dropped) pass a random frozen 1x1 conv to D/8, D/4, D/2, D
    channels (96/192/384/768 for ViT-B), then a transposed conv (x4, x2), identity, or a stride-2 conv.
    """

    is_vit = True

    def __init__(self, name: str, pretrained: bool = True, checkpoint_path: Optional[PathLike] = None,
                 cache_dir: Optional[PathLike] = None, interp_size: int = 224) -> None:
        model = _create_timm_model(name, pretrained, checkpoint_path, cache_dir)
        depth, dim = len(model.blocks), model.embed_dim
        indices = [round((k + 1) * depth / 4) - 1 for k in range(4)]  # 12 blocks -> 2, 5, 8, 11
        model.prune_intermediate_layers(indices, prune_norm=True, prune_head=True)
        super().__init__(name, model, interp_size)
        self.indices = indices
        patch = model.patch_embed.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        img_size = getattr(model.patch_embed, 'img_size', None) or (interp_size, interp_size)
        self.native_size = int(img_size[0])
        self.channels = (dim // 8, dim // 4, dim // 2, dim)
        self.reassemble = nn.ModuleList(_reassemble_layer(dim, ch, self.patch_size, r)
                                        for ch, r in zip(self.channels, REDUCTIONS))
        self._freeze()

    def target_size(self, res: int) -> Optional[int]:
        return self.native_size  # a ViT's position embedding fixes its input size

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True,
                                                  output_fmt='NCHW')  # 4 x [B, D, H/p, W/p]
        return [layer(t) for layer, t in zip(self.reassemble, tokens)]


def _reassemble_layer(dim: int, ch: int, patch: int, reduction: int) -> nn.Sequential:
    """1x1 conv dim -> ch, then resample the 1/patch grid to 1/reduction (DPT's reassemble, random weights)."""
    layers: list[nn.Module] = [nn.Conv2d(dim, ch, 1)]
    if patch > reduction:
        if patch % reduction:
            raise ValueError(f'ViT patch size {patch} is not a multiple of stride {reduction}')
        f = patch // reduction
        layers.append(nn.ConvTranspose2d(ch, ch, kernel_size=f, stride=f))
    elif patch < reduction:
        if reduction % patch:
            raise ValueError(f'stride {reduction} is not a multiple of the ViT patch size {patch}')
        layers.append(nn.Conv2d(ch, ch, kernel_size=3, stride=reduction // patch, padding=1))
    return nn.Sequential(*layers)


class RandomProjection(nn.Module):
    """Projected GAN's random, frozen feature projection (proj_type 2): CCM then CSM.

    CCM: a 1x1 conv per stage to ``cout * (1, 2, 4, 8)`` channels (``expand``) or ``cout``. CSM: top-down fusion,
    deepest first: add the coarser result, x2 bilinear upsample, 1x1 conv to the next shallower stage's width;
    outputs ``cout * (1, 1, 2, 4)`` channels at twice each stage's resolution.
    """

    def __init__(self, in_channels: tuple[int, ...], cout: int = 64, expand: bool = True) -> None:
        super().__init__()
        n = len(in_channels)
        ccm_ch = [cout * 2 ** i if expand else cout for i in range(n)]  # [64, 128, 256, 512]
        self.ccm = nn.ModuleList(nn.Conv2d(c_in, c_out, 1) for c_in, c_out in zip(in_channels, ccm_ch))
        csm_ch = [ccm_ch[max(i - 1, 0)] for i in range(n)]  # [64, 64, 128, 256]
        self.csm = nn.ModuleList(nn.Conv2d(ccm_ch[i], csm_ch[i], 1) for i in range(n))
        self.out_channels = tuple(csm_ch)
        self.requires_grad_(False)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """4 maps [B, C_i, S/r_i, S/r_i] -> 4 maps [B, out_channels[i], 2S/r_i, 2S/r_i]."""
        mixed = [conv(f) for conv, f in zip(self.ccm, feats)]
        outs: list[torch.Tensor] = [None] * len(mixed)  # type: ignore[list-item]
        prev = None
        for i in reversed(range(len(mixed))):
            x = mixed[i] if prev is None else mixed[i] + _match_size(prev, mixed[i])
            x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)  # as upstream's fusion block
            outs[i] = prev = self.csm[i](x)
        return outs


def _match_size(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Resize the upsampled coarser map when odd sizes (e.g. 7 -> 14 vs 15) make it differ from the finer one."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode='bilinear', align_corners=False)


# ---------------------------------------------------------------------------------------------------------------
# Registry of backbone kinds: a timm model module (family) decides how its features are taken.

_KINDS: dict[str, tuple[type[Backbone], tuple[str, ...]]] = {}


def register_backbone_kind(kind: str, cls: type[Backbone], timm_modules: tuple[str, ...] = ()) -> None:
    """Register a backbone class for the timm modules (families) listed; the kind 'cnn' is the fallback."""
    _KINDS[kind] = (cls, tuple(timm_modules))


register_backbone_kind('vit', ViTBackbone, ('vision_transformer', 'deit', 'eva', 'beit', 'vision_transformer_relpos'))
register_backbone_kind('cnn', CNNBackbone)


def list_backbone_kinds() -> list[str]:
    """Registered backbone kinds ('cnn', 'vit', ...)."""
    return sorted(_KINDS)


def backbone_kind(name: str) -> str:
    """The kind of timm model ``name``: the first registered kind whose timm modules contain it, else 'cnn'."""
    _check_model_name(name)
    for kind, (_, modules) in _KINDS.items():
        if modules and timm.models.is_model_in_modules(name, modules):
            return kind
    return 'cnn'


def create_backbone(name: str, pretrained: bool = True, checkpoint_path: Optional[PathLike] = None,
                    cache_dir: Optional[PathLike] = None, interp_size: int = 224,
                    kind: Optional[str] = None) -> Backbone:
    """Build the frozen feature backbone for any timm model ``name`` (ViT or CNN, picked by its timm family).

    Args:
        pretrained: load timm's pretrained weights (Hugging Face hub cache; fails clearly when offline).
        checkpoint_path: a local weight file of this model (state dict, .pth or .safetensors), used instead of the
            hub; implies pretrained weights.
        cache_dir: override of the Hugging Face hub cache folder.
        interp_size: CNN inputs smaller than this are resized to it (StyleGAN-XL: 224).
        kind: force a registered kind instead of detecting it.
    """
    kind = kind or backbone_kind(name)
    if kind not in _KINDS:
        raise ValueError(f'unknown backbone kind {kind!r}; known: {", ".join(list_backbone_kinds())}')
    cls = _KINDS[kind][0]
    return cls(name, pretrained=pretrained, checkpoint_path=checkpoint_path, cache_dir=cache_dir,
               interp_size=interp_size)


# ---------------------------------------------------------------------------------------------------------------
# timm model creation with clear errors.

def _check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    all_names = timm.list_models()
    close = difflib.get_close_matches(name, all_names, n=6, cutoff=0.6)
    if not close:
        part = max(name.replace('.', '_').split('_'), key=len)
        close = timm.list_models(f'*{part}*')[:6]
    hint = f'; close matches: {", ".join(close)}' if close else ''
    raise ValueError(f'unknown timm backbone {name!r}{hint} (all names: timm.list_models())')


def _pick_stages(name: str, reductions: list[int]) -> list[int]:
    """Index of the deepest stage at each stride in REDUCTIONS."""
    picks = []
    for r in REDUCTIONS:
        found = [i for i, red in enumerate(reductions) if red == r]
        if not found:
            raise ValueError(f'timm model {name!r} has feature strides {reductions}; the projected discriminator '
                             f'needs stages at strides {list(REDUCTIONS)}')
        picks.append(found[-1])
    return picks


def _create_timm_model(name: str, pretrained: bool, checkpoint_path: Optional[PathLike],
                       cache_dir: Optional[PathLike], **kw) -> nn.Module:
    """``timm.create_model`` with weights from the hub or ``checkpoint_path``; download failures become clear."""
    _check_model_name(name)
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'checkpoint_path for backbone {name!r} does not exist: {str(path)!r}')
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw)
        except Exception as e:
            raise BackboneWeightsError(f'could not load {str(path)!r} into timm model {name!r}: {e}') from e
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kw)
    try:
        return timm.create_model(name, pretrained=True, cache_dir=cache_dir, **kw)
    except Exception as e:
        if not _is_download_error(e):
            raise
        raise BackboneWeightsError(_offline_message(name, cache_dir, e)) from e


def _is_download_error(e: BaseException) -> bool:
    """Network and missing-cache errors (OSError family, or raised by the hub/HTTP client libraries)."""
    if isinstance(e, (OSError, ConnectionError, TimeoutError)):
        return True
    return type(e).__module__.split('.')[0] in ('huggingface_hub', 'httpx', 'httpcore', 'requests', 'urllib3')


def _hf_cache(cache_dir: Optional[PathLike]) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    try:
        from huggingface_hub import constants
        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return os.path.join(os.environ.get('HF_HOME', os.path.expanduser('~/.cache/huggingface')), 'hub')


def _offline_message(name: str, cache_dir: Optional[PathLike], err: BaseException) -> str:
    """Which weight file(s) timm wanted for ``name``, where they go, and how to put them there."""
    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, 'hf_hub_id', None)
    url = getattr(cfg, 'url', None)
    torch_ckpt = os.path.join(torch.hub.get_dir(), 'checkpoints')
    lines = [f'could not get the pretrained weights of timm backbone {name!r} '
             f'({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}).',
             'The machine is probably offline and the weights are not cached. Put them in place, then run again:']
    if repo:
        repo_dir = 'models--' + repo.replace('/', '--')
        filename = getattr(cfg, 'hf_hub_filename', None) or 'model.safetensors (or pytorch_model.bin)'
        folder = os.path.join(_hf_cache(cache_dir), repo_dir)
        lines.append(f"  - Hugging Face hub cache (timm's source): repo {repo!r}, file {filename}, in the folder "
                     f'{folder} ($HF_HOME/hub, default ~/.cache/huggingface/hub). '
                     f'On a connected machine run `hf download {repo}` (or `huggingface-cli download {repo}`) and '
                     f'copy that folder over; set HF_HUB_OFFLINE=1 on offline machines to skip network timeouts.')
    if url:
        lines.append(f'  - or the file {url.rsplit("/", 1)[-1]!r} from {url} in the torch hub cache {torch_ckpt} '
                     '($TORCH_HOME/hub/checkpoints), with TIMM_USE_OLD_CACHE=1 set.')
    lines.append(f'  - or pass checkpoint_path=/path/to/weights (.safetensors or .pth state dict of {name!r}), or '
                 'pretrained=False for random weights (tests only).')
    return '\n'.join(lines)

