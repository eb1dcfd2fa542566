"""Feature extractors: uint8 images [N, 3, H, W] -> float features [N, dim], as a plug-in registry.

Built in (weights from local files only, see ``weights.py``):

- ``inception``: pool3 2048-d of torch-fidelity's InceptionV3, a port of the TF ``inception-2015-12-05`` graph with
  TF1's bilinear resize to 299 (matches TF to ~1e-5 in FID); for FID and KID.
- ``inception_logits``: the same network's 1008 logits without the fc bias, for the Inception Score.
- ``vgg16``: torchvision VGG16 (IMAGENET1K_V1) fc2 after ReLU, 4096-d, TF1 bilinear resize to 224 and ImageNet
  normalisation (torch-fidelity 0.4's ``vgg16`` ``fc2_relu`` recipe); for precision/recall and density/coverage.

Anything else: wrap a module in :class:`CallableExtractor` and :func:`register_extractor` a factory for it (the
digits study registers its ``digits_cnn`` this way when :mod:`san_ext.studies.digits_classifier` is imported; the
registry itself knows no study).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Union, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .weights import INCEPTION_WEIGHTS, VGG16_WEIGHTS, WeightFile, find_weights, load_state_dict

__all__ = ['CallableExtractor', 'FeatureExtractor', 'check_images', 'extractor_weights', 'get_extractor',
           'list_extractors', 'register_extractor', 'unregister_extractor']

PathLike = Union[str, os.PathLike]
_INSTALL_HINT = 'pip install "torch-fidelity>=0.3" (or pip install -e ".[metrics]")'


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps uint8 images [N, 3, H, W] (grey repeated to 3 channels) to float features [N, dim].

    ``name`` is the registry name, ``version`` identifies the weights (part of the reference-cache key), ``resize``
    describes the resampling to the network's input size (recorded with every score).
    """

    name: str
    dim: int
    version: str
    resize: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def check_images(images: torch.Tensor) -> None:
    """Raise unless ``images`` is a uint8 [N, 3, H, W] tensor."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f'feature extractors take uint8 images [N, 3, H, W], got {shape} '
                         f'{getattr(images, "dtype", "")}')


class _Extractor(nn.Module):
    """A network with the FeatureExtractor attributes and input/output shape checks."""

    def __init__(self, net: nn.Module, name: str, dim: int, version: str, resize: str) -> None:
        super().__init__()
        self.net, self.name, self.dim, self.version, self.resize = net, name, dim, version, resize

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        out = self.features(images)
        if out.ndim != 2 or out.shape != (images.shape[0], self.dim):
            raise ValueError(f'extractor {self.name!r} returned {list(out.shape)}, expected [{images.shape[0]}, '
                             f'{self.dim}]')
        return out.float()

    def extra_repr(self) -> str:
        return f'name={self.name!r}, dim={self.dim}, version={self.version!r}, resize={self.resize!r}'


def _state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class CallableExtractor(_Extractor):
    """Any module mapping float images to features [N, dim] as a :class:`FeatureExtractor` (e.g. a small digits
    classifier). uint8 pixels are scaled to ``value_range``; ``in_chans=1`` averages the 3 channels back to grey;
    ``resize`` (a side in pixels) resamples with antialiased bilinear (PIL-like). ``version`` defaults to a hash of
    the module's weights, so retraining the module invalidates cached reference statistics.
    """

    def __init__(self, module: nn.Module, name: str, dim: int, *, resize: Optional[int] = None, in_chans: int = 3,
                 value_range: tuple[float, float] = (-1.0, 1.0), version: Optional[str] = None) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f'in_chans must be 1 or 3, got {in_chans}')
        super().__init__(module, name, dim, version or _state_hash(module),
                         f'torch-bilinear-aa-{resize}' if resize else 'none')
        self.size, self.in_chans, self.value_range = resize, in_chans, value_range

    def features(self, images: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        x = images.float() * ((hi - lo) / 255.0) + lo  # [N, 3, H, W]
        if self.in_chans == 1:
            x = x.mean(dim=1, keepdim=True)
        if self.size and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode='bilinear', align_corners=False, antialias=True)
        return self.net(x)


# ---------------------------------------------------------------------------------------------------------------
# Registry.

@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., FeatureExtractor]
    weights: Optional[WeightFile]


_EXTRACTORS: dict[str, _Entry] = {}


def register_extractor(name: str, factory: Optional[Callable[..., FeatureExtractor]] = None, *,
                       weights: Optional[WeightFile] = None, overwrite: bool = False):
    """Register ``factory(**kw) -> FeatureExtractor`` under ``name``; usable as a decorator. Factories of networks
    with a published weight file name it in ``weights`` and take a ``weights=`` keyword (a file or a folder)."""
    def add(fn: Callable[..., FeatureExtractor]) -> Callable[..., FeatureExtractor]:
        if name in _EXTRACTORS and not overwrite:
            raise ValueError(f'feature extractor {name!r} is already registered')
        _EXTRACTORS[name] = _Entry(fn, weights)
        return fn

    return add(factory) if factory is not None else add


def unregister_extractor(name: str) -> None:
    """Remove extractor ``name`` from the registry (e.g. a test's own); unknown names fail listing the known ones."""
    _entry(name)
    del _EXTRACTORS[name]


def list_extractors() -> list[str]:
    """Registered extractor names, sorted."""
    return sorted(_EXTRACTORS)


def _entry(name: str) -> _Entry:
    if name not in _EXTRACTORS:
        raise ValueError(f'unknown feature extractor {name!r}; known: {", ".join(list_extractors())}')
    return _EXTRACTORS[name]


def extractor_weights(name: str) -> Optional[WeightFile]:
    """The weight file extractor ``name`` needs (None for custom ones)."""
    return _entry(name).weights


def get_extractor(name: str, **kw) -> FeatureExtractor:
    """Build the registered extractor ``name`` (in eval mode); unknown names list the known ones."""
    return _entry(name).factory(**kw)


# ---------------------------------------------------------------------------------------------------------------
# Built-in networks. Weight files are located (or the error raised) before torch-fidelity or torchvision is touched.

def _import_torch_fidelity():
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as inception
        import torch_fidelity.interpolate_compat_tensorflow as interp
    except ImportError as err:
        raise ImportError(f'the inception and vgg16 extractors need torch-fidelity: {_INSTALL_HINT}') from err
    return inception, interp


class _TorchFidelityInception(nn.Module):
    """torch-fidelity's FeatureExtractorInceptionV3 returning one of its outputs ('2048' or 'logits_unbiased')."""

    def __init__(self, path: PathLike, output: str) -> None:
        super().__init__()
        inception, _ = _import_torch_fidelity()
        self.output = output
        self.inception = inception.FeatureExtractorInceptionV3('inception-v3-compat', [output],
                                                               feature_extractor_weights_path=str(path))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inception(images)[0]


def _inception(output: str, dim: int, name: str, weights: Optional[PathLike]) -> _Extractor:
    path = find_weights(INCEPTION_WEIGHTS, weights)
    _, sha = load_state_dict(INCEPTION_WEIGHTS, path)  # hash check and a code-free load before torch-fidelity's
    net = _TorchFidelityInception(path, output)
    return _Extractor(net, name, dim, f'tf-inception-2015-12-05/{sha[:8]}/{output}', 'tf1-bilinear-299').eval()


@register_extractor('inception', weights=INCEPTION_WEIGHTS)
def inception(weights: Optional[PathLike] = None) -> FeatureExtractor:
    """InceptionV3 pool3 features, 2048-d (FID, KID)."""
    return _inception('2048', 2048, 'inception', weights)


@register_extractor('inception_logits', weights=INCEPTION_WEIGHTS)
def inception_logits(weights: Optional[PathLike] = None) -> FeatureExtractor:
    """InceptionV3 logits without the fc bias, 1008-d (Inception Score)."""
    return _inception('logits_unbiased', 1008, 'inception_logits', weights)


class _VGG16Fc2(nn.Module):
    """torchvision VGG16 up to fc2 + ReLU, with TF1-style bilinear resize to 224 and ImageNet normalisation."""

    def __init__(self, state: dict) -> None:
        super().__init__()
        import torchvision

        _, interp = _import_torch_fidelity()
        self._resize = interp.interpolate_bilinear_2d_like_tensorflow1x
        vgg = torchvision.models.vgg16()
        vgg.load_state_dict(state)
        vgg.classifier = vgg.classifier[:5]  # fc1, relu, dropout, fc2, relu
        self.vgg = vgg
        self.register_buffer('mean', 255 * torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', 255 * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self._resize(images.float(), size=(224, 224), align_corners=False)  # [N, 3, 224, 224] in 0..255
        return self.vgg((x - self.mean) / self.std)


@register_extractor('vgg16', weights=VGG16_WEIGHTS)
def vgg16(weights: Optional[PathLike] = None) -> FeatureExtractor:
    """VGG16 fc2 features after ReLU, 4096-d (precision/recall, density/coverage)."""
    path = find_weights(VGG16_WEIGHTS, weights)
    state, sha = load_state_dict(VGG16_WEIGHTS, path)
    return _Extractor(_VGG16Fc2(state), 'vgg16', 4096, f'torchvision-vgg16/{sha[:8]}/fc2_relu',
                      'tf1-bilinear-224').eval()
