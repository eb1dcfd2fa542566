"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable colour, translation and cutout augmentation.

Applied to real and fake images alike before the discriminator, so D never sees un-augmented data and gradients
reach G through the augmentation. The projected discriminator draws a fresh augmentation per backbone. Every
random draw takes an optional ``torch.Generator`` for reproducible runs and tests.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch

__all__ = ['AUGMENTS', 'diff_augment', 'parse_policy']

Policy = Union[str, tuple[str, ...], list[str]]


def _rand(x: torch.Tensor, shape: tuple[int, ...], generator: Optional[torch.Generator]) -> torch.Tensor:
    """U[0, 1) draws on the generator's device (its own stream), moved to x's device and dtype."""
    device = generator.device if generator is not None else x.device
    return torch.rand(shape, generator=generator, device=device).to(device=x.device, dtype=x.dtype)


def _randint(x: torch.Tensor, low: int, high: int, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """n integers in [low, high) on x's device."""
    device = generator.device if generator is not None else x.device
    return torch.randint(low, high, (n,), generator=generator, device=device).to(x.device)


def brightness(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Add a per-sample offset in [-0.5, 0.5)."""
    return x + (_rand(x, (x.shape[0], 1, 1, 1), generator) - 0.5)


def saturation(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Scale the deviation from the per-pixel channel mean by a per-sample factor in [0, 2)."""
    mean = x.mean(dim=1, keepdim=True)  # [B, 1, H, W]
    return (x - mean) * (_rand(x, (x.shape[0], 1, 1, 1), generator) * 2) + mean


def contrast(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Scale the deviation from the per-image mean by a per-sample factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
    return (x - mean) * (_rand(x, (x.shape[0], 1, 1, 1), generator) + 0.5) + mean


def translation(x: torch.Tensor, generator: Optional[torch.Generator] = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size per axis (integer pixels), filling with zeros."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(x, -sy, sy + 1, b, generator)
    tx = _randint(x, -sx, sx + 1, b, generator)
    rows = torch.arange(h, device=x.device).view(1, h) - ty.view(b, 1)  # source row of each output row [B, H]
    cols = torch.arange(w, device=x.device).view(1, w) - tx.view(b, 1)  # [B, W]
    inside = ((rows >= 0) & (rows < h)).view(b, h, 1) & ((cols >= 0) & (cols < w)).view(b, 1, w)  # [B, H, W]
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = x[batch, :, rows.clamp(0, h - 1).view(b, h, 1), cols.clamp(0, w - 1).view(b, 1, w)]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2) * inside.unsqueeze(1).to(x.dtype)


def cutout(x: torch.Tensor, generator: Optional[torch.Generator] = None, ratio: float = 0.2) -> torch.Tensor:
    """Zero one square of side ``ratio`` * size per image, centred anywhere (it may be clipped at the border)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y0 = _randint(x, 0, h + 1, b, generator) - ch // 2  # top-left corner [B]
    x0 = _randint(x, 0, w + 1, b, generator) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h)
    xs = torch.arange(w, device=x.device).view(1, w)
    in_y = (ys >= y0.view(b, 1)) & (ys < (y0 + ch).view(b, 1))  # [B, H]
    in_x = (xs >= x0.view(b, 1)) & (xs < (x0 + cw).view(b, 1))  # [B, W]
    keep = ~(in_y.view(b, h, 1) & in_x.view(b, 1, w))  # [B, H, W]
    return x * keep.unsqueeze(1).to(x.dtype)


AugmentFn = Callable[..., torch.Tensor]
AUGMENTS: dict[str, tuple[AugmentFn, ...]] = {
    'color': (brightness, saturation, contrast),
    'translation': (translation,),
    'cutout': (cutout,),
}


def parse_policy(policy: Policy) -> tuple[str, ...]:
    """'color,translation,cutout' (or a sequence of names) -> validated tuple; '' means no augmentation."""
    names = [p.strip() for p in policy.split(',')] if isinstance(policy, str) else [str(p).strip() for p in policy]
    names = [p for p in names if p]
    unknown = [p for p in names if p not in AUGMENTS]
    if unknown:
        raise ValueError(f'unknown DiffAugment op(s) {", ".join(map(repr, unknown))}; known: {", ".join(AUGMENTS)}')
    return tuple(names)


def diff_augment(x: torch.Tensor, policy: Policy = 'color,translation,cutout',
                 generator: Optional[torch.Generator] = None, translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.2) -> torch.Tensor:
    """Apply the policy's ops in order to x [B, C, H, W] (images in [-1, 1]); differentiable in x.

    StyleGAN-XL's settings are the defaults: translation 1/8 of the size, cutout 0.2 of the size.
    """
    if x.ndim != 4:
        raise ValueError(f'diff_augment expects images [B, C, H, W], got shape {list(x.shape)}')
    for name in parse_policy(policy):
        for fn in AUGMENTS[name]:
            if fn is translation:
                x = fn(x, generator, translation_ratio)
            elif fn is cutout:
                x = fn(x, generator, cutout_ratio)
            else:
                x = fn(x, generator)
    return x.contiguous()
