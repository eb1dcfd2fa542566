"""Band-limit schedule and low-pass filter design of the alias-free synthesis network.

Alias-Free GAN (Karras et al., NeurIPS 2021), Sec. 3.2 and Fig. 4b / Appendix F: every layer ``i`` works on a signal of
cutoff ``f_c[i]`` and minimum stopband ``f_t[i]``, sampled at rate ``s[i]``, both growing geometrically from the first
layer to the critically sampled last layers. StyleGAN-XL's super-resolution heads continue the same progression from
the last kept stem layer. Our own code, written from the paper's description (MIT), not derived from StyleGAN3 files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.signal
import scipy.special
import torch

__all__ = ['BandSchedule', 'LayerSpec', 'band_schedule', 'layer_specs', 'lowpass_filter']


@dataclass(frozen=True)
class BandSchedule:
    """Per-layer band limits; entry ``i`` describes the *output* of layer ``i`` (the last entry is ToRGB)."""

    cutoffs: tuple[float, ...]        # f_c[i], cycles per image unit
    stopbands: tuple[float, ...]      # f_t[i]
    sampling_rates: tuple[int, ...]   # s[i], samples per image unit
    half_widths: tuple[float, ...]    # f_h[i] = max(f_t[i], s[i] / 2) - f_c[i]
    sizes: tuple[int, ...]            # s[i] + 2 * margin; the last two are the image resolution
    channels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.cutoffs)


@dataclass(frozen=True)
class LayerSpec:
    """Everything that fixes one SynthesisLayer's shapes and filters (Alias-Free GAN, Appendix F)."""

    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float


def band_schedule(num_layers: int, num_critical: int, first_cutoff: float, first_stopband: float,
                  img_resolution: int, last_stopband_rel: float, margin_size: int, channel_base: float,
                  channel_max: int, img_channels: int, first_sampling_rate: Optional[int] = None,
                  first_channels: Optional[int] = None) -> BandSchedule:
    """The schedule of ``num_layers + 1`` layers (ToRGB last), Alias-Free GAN Fig. 4b.

    ``f_c`` and ``f_t`` grow geometrically with exponent ``min(i / (num_layers - num_critical), 1)`` up to
    ``f_c = res / 2`` and ``f_t = res / 2 * last_stopband_rel``; ``s[i]`` is the smallest power of two above
    ``2 f_t[i]`` (at most ``res``); channels are ``rint(min(channel_base / 2 / f_c, channel_max))``. A superres head
    pins the first layer's sampling rate and width to the stem's last kept layer (``first_*``).
    """
    if num_layers <= num_critical:
        raise ValueError(f'need more layers than critically sampled ones, got num_layers={num_layers}, '
                         f'num_critical={num_critical}')
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    if first_sampling_rate is not None:
        rates[0] = first_sampling_rate
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution  # the last critically sampled layer crops the margin away
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    if first_channels is not None:
        channels[0] = first_channels
    channels[-1] = img_channels
    return BandSchedule(cutoffs=tuple(float(v) for v in cutoffs), stopbands=tuple(float(v) for v in stopbands),
                        sampling_rates=tuple(int(v) for v in rates), half_widths=tuple(float(v) for v in half_widths),
                        sizes=tuple(int(v) for v in sizes), channels=tuple(int(v) for v in channels))


def layer_specs(sched: BandSchedule, num_critical: int, img_resolution: int, num_fp16_res: int,
                first_index: int = 0) -> list[LayerSpec]:
    """One LayerSpec per schedule entry: layer ``i`` maps entry ``max(i - 1, 0)`` to entry ``i``.

    Names follow StyleGAN3's ``L{index}_{out_size}_{out_channels}`` so that state-dict keys line up with upstream's.
    FP16 is flagged where ``s[i] * 2**num_fp16_res > img_resolution`` (only honoured on CUDA).
    """
    num_layers = len(sched) - 1
    specs = []
    for i in range(num_layers + 1):
        p = max(i - 1, 0)
        specs.append(LayerSpec(
            name=f'L{i + first_index}_{sched.sizes[i]}_{sched.channels[i]}',
            is_torgb=i == num_layers, is_critically_sampled=i >= num_layers - num_critical,
            use_fp16=sched.sampling_rates[i] * 2 ** num_fp16_res > img_resolution,
            in_channels=sched.channels[p], out_channels=sched.channels[i],
            in_size=sched.sizes[p], out_size=sched.sizes[i],
            in_sampling_rate=sched.sampling_rates[p], out_sampling_rate=sched.sampling_rates[i],
            in_cutoff=sched.cutoffs[p], out_cutoff=sched.cutoffs[i],
            in_half_width=sched.half_widths[p], out_half_width=sched.half_widths[i]))
    return specs


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                   radial: bool = False) -> Optional[torch.Tensor]:
    """Kaiser-windowed low-pass filter (Alias-Free GAN, Appendix C.1), or None for a single tap (identity).

    Separable: 1-D taps from ``scipy.signal.firwin`` (transition ``width`` picks the Kaiser beta). Radial (config R,
    Appendix C.2): a 2-D jinc ``J1(2 pi f_c r) / (pi r)`` windowed by the outer product of the same Kaiser window,
    normalised to unit DC gain.
    """
    if numtaps < 1:
        raise ValueError(f'numtaps must be >= 1, got {numtaps}')
    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)
    coords = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(coords, coords))
    safe_r = np.where(r == 0, 1.0, r)
    jinc = np.where(r == 0, cutoff, scipy.special.j1(2 * np.pi * cutoff * safe_r) / (np.pi * safe_r))
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    taps2d = jinc * np.outer(window, window)
    return torch.as_tensor(taps2d / taps2d.sum(), dtype=torch.float32)
