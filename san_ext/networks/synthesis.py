"""Alias-free synthesis network (StyleGAN3 configs T and R) as used by StyleGAN-XL.

Alias-Free GAN (Karras et al., NeurIPS 2021), Sec. 3 and Appendix F: Fourier-feature input, then layers of modulated
convolution followed by a filtered leaky ReLU that runs the nonlinearity at a higher sampling rate between two
Kaiser low-pass filters (``torch_utils.ops.filtered_lrelu``). Module and buffer names (``input``,
``L{i}_{size}_{ch}``, ``affine``, ``weight``, ``bias``, ``magnitude_ema``, ``up_filter``, ``down_filter``,
``transform``, ``freqs``, ``phases``) follow upstream's state dicts. Our own code (MIT), written from the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from torch_utils.ops.filtered_lrelu import filtered_lrelu

from .filters import LayerSpec, lowpass_filter
from .mapping import FullyConnected

__all__ = ['LayerOptions', 'SynthesisInput', 'SynthesisLayer', 'SynthesisNetwork', 'modulated_conv2d']


@dataclass(frozen=True)
class LayerOptions:
    """Hyperparameters shared by all synthesis layers (Alias-Free GAN, Appendix F / Table 4)."""

    conv_kernel: int = 3             # 3 for config T, 1 for config R; ToRGB always uses 1
    filter_size: int = 6             # taps per low-resolution sample of the up/down filters
    lrelu_upsampling: int = 2        # the nonlinearity runs at this multiple of the higher sampling rate
    use_radial_filters: bool = False  # config R: radial (jinc) down filters in non-critical layers
    conv_clamp: Optional[float] = 256  # clamp every layer output to +-conv_clamp; None disables
    magnitude_ema_beta: float = 0.999  # decay of the input-magnitude EMA (updated only when update_emas)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, padding: int = 0,
                     demodulate: bool = True, input_gain: Optional[torch.Tensor] = None) -> torch.Tensor:
    """StyleGAN2 modulated convolution (Karras et al., CVPR 2020, Eqs. 1-3) in its non-fused form.

    Scaling input channels by the styles before a shared convolution equals convolving with per-sample modulated
    weights; demodulation divides each output channel by ``||w'_o||`` = sqrt(sum_i s_i^2 sum_k w_oik^2). Weights and
    styles are first normalised by their RMS (cancelled by demodulation; keeps FP16 in range). ``input_gain`` scales
    the input after demodulation (StyleGAN3's magnitude normalisation). x: [N, I, H, W]; weight: [O, I, k, k];
    styles: [N, I] -> [N, O, H', W'].
    """
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    scale = styles
    if input_gain is not None:
        scale = scale * input_gain
    x = x * scale.to(x.dtype)[:, :, None, None]
    x = F.conv2d(x, weight.to(x.dtype), padding=padding)
    if demodulate:
        # [N, I] @ [I, O]: squared norm of each per-sample modulated filter.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
        x = x * dcoefs.to(x.dtype)[:, :, None, None]
    return x


class SynthesisInput(nn.Module):
    """Fourier features (Alias-Free GAN Sec. 3.2): ``channels`` sinusoids with random frequencies inside a disc of
    radius ``bandwidth``, sampled on a ``size`` grid at ``sampling_rate`` and mixed by a trainable matrix.

    The affine map of w gives a rotation and translation of the features (config T uses them; StyleGAN3 does too for
    R). ``transform`` [3, 3] is an extra, user-set inverse transform of the image plane (equivariance metrics).
    """

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.w_dim, self.channels, self.size = w_dim, channels, int(size)
        self.sampling_rate, self.bandwidth = sampling_rate, bandwidth
        # Frequencies: Gaussian directions, radii reshaped so that the points fill the disc of radius `bandwidth`.
        freqs = torch.randn([channels, 2])
        radii = freqs.norm(dim=1, keepdim=True)
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnected(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])  # identity at init
        self.register_buffer('transform', torch.eye(3))
        self.register_buffer('freqs', freqs)
        self.register_buffer('phases', torch.rand([channels]) - 0.5)

    def _transforms(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample inverse image transform: rotate, then translate, then the user ``transform``. -> [N, 3, 3]"""
        t = self.affine(w)  # [N, 4] = (cos, sin, tx, ty) before normalising the rotation part
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        rot = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=1).view(-1, 3, 3)
        shift = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).view(-1, 3, 3)
        return rot @ shift @ self.transform.unsqueeze(0)

    def _grid(self, device: torch.device) -> torch.Tensor:
        """Pixel-centre coordinates in image units (the image spans [-0.5, 0.5] at the output). -> [H, W, 2] (x, y)"""
        coords = (torch.arange(self.size, device=device, dtype=torch.float32) + 0.5 - self.size / 2)
        coords = coords / self.sampling_rate
        gy, gx = torch.meshgrid(coords, coords, indexing='ij')
        return torch.stack([gx, gy], dim=-1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # [N, w_dim] -> [N, channels, size, size]
        m = self._transforms(w)  # [N, 3, 3]
        freqs = self.freqs.unsqueeze(0) @ m[:, :2, :2]  # [N, C, 2]
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ m[:, :2, 2:]).squeeze(2)  # [N, C]
        # Fade out frequencies that a user transform pushed beyond the band (they would alias).
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        grid = self._grid(w.device)  # [H, W, 2]
        arg = torch.einsum('hwk,nck->nhwc', grid, freqs) + phases[:, None, None, :]  # [N, H, W, C]
        x = torch.sin(arg * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return (f'w_dim={self.w_dim}, channels={self.channels}, size={self.size}, '
                f'sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}')


def _padding(in_size: int, out_size: int, kernel: int, up: int, down: int, up_taps: int, down_taps: int) -> list[int]:
    """Pads [x0, x1, y0, y1] for the upsampling step so that the layer maps ``in_size`` to ``out_size``.

    Full convolution gives ``in + k - 1`` samples, upsampling ``up`` times as many; the two filters eat
    ``up_taps + down_taps - 2``; ``(out - 1) * down + 1`` must be left before decimation. The split puts sample
    centres where the symmetric (half-pixel) interpretation wants them (Alias-Free GAN, Appendix C.3).
    """
    total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
    lo = (total + up) // 2
    return [lo, total - lo, lo, total - lo]


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU (Alias-Free GAN Sec. 3.2, Fig. 4a), or the linear ToRGB layer.

    The nonlinearity runs at ``max(s_in, s_out) * lrelu_upsampling`` between an up filter (cutoff ``f_c,in``) and a
    down filter (cutoff ``f_c,out``); ``magnitude_ema`` normalises the input magnitude (Appendix F).
    """

    def __init__(self, w_dim: int, spec: LayerSpec, opts: Optional[LayerOptions] = None):
        super().__init__()
        opts = LayerOptions() if opts is None else opts
        self.w_dim, self.spec = w_dim, spec
        self.is_torgb, self.is_critically_sampled = spec.is_torgb, spec.is_critically_sampled
        self.use_fp16 = spec.use_fp16
        self.in_channels, self.out_channels = spec.in_channels, spec.out_channels
        self.in_size, self.out_size = spec.in_size, spec.out_size
        self.in_cutoff, self.out_cutoff = spec.in_cutoff, spec.out_cutoff
        self.out_sampling_rate, self.out_half_width = spec.out_sampling_rate, spec.out_half_width
        self.conv_kernel = 1 if spec.is_torgb else opts.conv_kernel
        self.conv_clamp, self.magnitude_ema_beta = opts.conv_clamp, opts.magnitude_ema_beta
        self.affine = FullyConnected(w_dim, spec.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([spec.out_channels, spec.in_channels, self.conv_kernel,
                                                self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([spec.out_channels]))
        self.register_buffer('magnitude_ema', torch.ones([]))
        self._setup_filters(spec, opts)

    def _setup_filters(self, spec: LayerSpec, opts: LayerOptions) -> None:
        rate = max(spec.in_sampling_rate, spec.out_sampling_rate) * (1 if spec.is_torgb else opts.lrelu_upsampling)
        self.up_factor = round(rate / spec.in_sampling_rate)
        self.down_factor = round(rate / spec.out_sampling_rate)
        if spec.in_sampling_rate * self.up_factor != rate or spec.out_sampling_rate * self.down_factor != rate:
            raise ValueError(f'{spec.name}: sampling rates {spec.in_sampling_rate} -> {spec.out_sampling_rate} are not '
                             f'integer fractions of the nonlinearity rate {rate}')
        up_taps = opts.filter_size * self.up_factor if self.up_factor > 1 and not spec.is_torgb else 1
        down_taps = opts.filter_size * self.down_factor if self.down_factor > 1 and not spec.is_torgb else 1
        radial = opts.use_radial_filters and not spec.is_critically_sampled
        self.register_buffer('up_filter', lowpass_filter(up_taps, spec.in_cutoff, spec.in_half_width * 2, rate))
        self.register_buffer('down_filter', lowpass_filter(down_taps, spec.out_cutoff, spec.out_half_width * 2, rate,
                                                           radial=radial))
        self.padding = _padding(spec.in_size, spec.out_size, self.conv_kernel, self.up_factor, self.down_factor,
                                up_taps, down_taps)

    def forward(self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        # x: [N, in_channels, in_size, in_size], w: [N, w_dim] -> [N, out_channels, out_size, out_size]
        if update_emas:
            with torch.no_grad():
                magnitude = x.detach().to(torch.float32).square().mean()
                self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.affine(w)  # [N, in_channels]
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_channels * self.conv_kernel ** 2)
        dtype = torch.float16 if self.use_fp16 and x.device.type == 'cuda' else torch.float32
        x = modulated_conv2d(x.to(dtype), self.weight, styles, padding=self.conv_kernel - 1,
                             demodulate=not self.is_torgb, input_gain=self.magnitude_ema.rsqrt())
        gain, slope = (1.0, 1.0) if self.is_torgb else (math.sqrt(2), 0.2)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias.to(dtype), up=self.up_factor,
                              down=self.down_factor, padding=self.padding, gain=gain, slope=slope,
                              clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        s = self.spec
        return (f'torgb={s.is_torgb}, critical={s.is_critically_sampled}, fp16={s.use_fp16}, '
                f'ch={s.in_channels}->{s.out_channels}, size={s.in_size}->{s.out_size}, '
                f'rate={s.in_sampling_rate}->{s.out_sampling_rate}, cutoff={s.in_cutoff:.3g}->{s.out_cutoff:.3g}')


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R]: input layer (ws[:, 0]), then one w per layer.

    A plain container so that super-resolution stages can reuse a stem's modules; build one with
    ``san_ext.networks.generator.build_synthesis``. ``output_scale`` (StyleGAN3: 0.25) multiplies the ToRGB output;
    there is no tanh, the output range is set by ToRGB's ``conv_clamp``.
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, input_layer: SynthesisInput,
                 layers: Sequence[SynthesisLayer], output_scale: float = 0.25):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.output_scale = output_scale
        self.input = input_layer
        self.layer_names: list[str] = []
        for layer in layers:
            self.add_module(layer.spec.name, layer)
            self.layer_names.append(layer.spec.name)
        self.num_ws = len(self.layer_names) + 1

    def forward(self, ws: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f'ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}')
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)  # [N, img_channels, img_resolution, img_resolution]

    def extra_repr(self) -> str:
        return f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}'
