"""Recorded StyleGAN-XL generators (a stem ``Generator`` or a ``SuperresGenerator`` chain) -> ours.

Upstream's parameter names are ours already (``mapping.fc0.weight``, ``synthesis.L3_36_1024.affine.bias``...), so
the work is finding the architecture. The stem's options come from the recorded constructor arguments of
``mapping`` and ``synthesis`` (``_init_kwargs``; upstream passes ``channel_base``/``channel_max`` already multiplied
by 2 for config T and 4 for R, ours multiplies them itself). A superres chain records only its last stage's
``head_layers``/``up_factor``; the earlier stages are found from the layers themselves: a stage's first layer
keeps its input band (``in_cutoff == out_cutoff``), so those layers split the list into the stem's kept layers,
each intermediate stage's kept layers (``head_layers - num_critical`` of them) and the last stage. The up-factors
are then the ones whose rebuilt chain reproduces every recorded layer: names, widths, sizes, sampling rates,
cutoffs, filter sizes and padding are compared, so a wrong guess cannot load.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from san_ext.networks import GeneratorConfig, SuperresConfig, build_generator
from san_ext.networks.generator import SYNTHESES
from san_ext.networks.superres import UP_FACTORS

from .convert import ConversionError, ConversionReport, load_converted
from .records import ModuleView, PersistentRecord

__all__ = ['convert_generator', 'infer_generator_spec']

_SG3_MODULES = ('training.networks_stylegan3_resetting', 'training.networks_stylegan3')
# Synthesis options recorded in _init_kwargs that we take over, with upstream's defaults when absent.
_SYNTH_DEFAULTS = dict(num_layers=14, num_critical=2, first_cutoff=2.0, first_stopband=2 ** 2.1,
                       last_stopband_rel=2 ** 0.3, margin_size=10, output_scale=0.25, num_fp16_res=4, conv_clamp=256,
                       filter_size=6, lrelu_upsampling=2, magnitude_ema_beta=0.999)
_KNOWN_SYNTH_KEYS = set(_SYNTH_DEFAULTS) | {'w_dim', 'img_resolution', 'img_channels', 'channel_base', 'channel_max',
                                            'conv_kernel', 'use_radial_filters'}
# Attributes every upstream SynthesisLayer records, compared with our rebuilt layer.
_LAYER_FIELDS = ('in_channels', 'out_channels', 'in_size', 'out_size', 'in_sampling_rate', 'out_sampling_rate',
                 'in_cutoff', 'out_cutoff', 'in_half_width', 'out_half_width', 'is_torgb', 'is_critically_sampled',
                 'use_fp16', 'conv_kernel', 'up_factor', 'down_factor', 'padding')


def _python(value: Any) -> Any:
    """Numpy scalars and arrays as Python numbers and lists (upstream stores rates as numpy scalars, sizes as
    ``[w, h]`` arrays); anything else unchanged."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


def _numbers(value: Any) -> np.ndarray:
    """A layer field (a number, a bool, a size or a padding list) as a float64 array."""
    return np.asarray(value, dtype=np.float64)


def _check_generator_record(view: ModuleView) -> None:
    rec = view.record
    if not isinstance(rec, PersistentRecord) or rec.class_name not in ('Generator', 'SuperresGenerator'):
        raise ConversionError(f'{view.path} is a {rec.qualname}, not a StyleGAN-XL generator')
    if rec.module_hint not in _SG3_MODULES:
        raise ConversionError(f'{view.path} is a {rec.qualname}: only StyleGAN-XL generators built on StyleGAN3 '
                              '(--cfg stylegan3-t / stylegan3-r) convert; stylegan2 and fastgan ones do not')


def _stem_config(mapping: ModuleView, synthesis: ModuleView) -> GeneratorConfig:
    """Our GeneratorConfig of the stem, from the recorded constructor arguments of mapping and synthesis."""
    mkw, skw = mapping.record.init_kwargs, synthesis.record.init_kwargs
    if not skw or 'img_resolution' not in skw:
        raise ConversionError(f'{synthesis.path} lacks its recorded constructor arguments (_init_kwargs); '
                              'this is not a pickle written by StyleGAN-XL')
    conv_kernel, radial = skw.get('conv_kernel', 3), bool(skw.get('use_radial_filters'))
    synthesis = 'stylegan3-r' if (conv_kernel, radial) == (1, True) else 'stylegan3-t'
    k = SYNTHESES[synthesis]
    base, cmax = skw.get('channel_base', 32768) / k, skw.get('channel_max', 512) / k
    opts = {name: skw.get(name, default) for name, default in _SYNTH_DEFAULTS.items()}
    embed = mapping.child('embed').tensors() if mapping.has_child('embed') else {}
    c_dim = int(mkw.get('c_dim', 0))
    return GeneratorConfig(
        img_resolution=int(skw['img_resolution']), z_dim=int(mkw['z_dim']), w_dim=int(mkw['w_dim']), c_dim=c_dim,
        img_channels=int(skw.get('img_channels', 3)), mapping_layers=int(mkw.get('num_layers', 2)),
        embed_dim=int(embed['weight'].shape[1]) if 'weight' in embed else 320,
        mapping_lr_multiplier=float(mkw.get('lr_multiplier', 0.01)),
        w_avg_beta=float(mkw.get('w_avg_beta', 0.998)), synthesis=synthesis,
        channel_base=int(base) if float(base).is_integer() else base,
        channel_max=int(cmax) if float(cmax).is_integer() else cmax,
        conv_kernel=None if conv_kernel == (1 if synthesis == 'stylegan3-r' else 3) else int(conv_kernel),
        use_radial_filters=None if radial == (synthesis == 'stylegan3-r') else radial, **opts)


def _recorded(view: ModuleView, name: str) -> float:
    """A recorded number (a layer's cutoff, rate or flag; a generator's resolution) as a float; a ConversionError
    names it when the pickle lacks it or holds something else."""
    value = view.get(name)
    if value is None:
        raise ConversionError(f'{view.path}.{name} is not recorded; this is not a pickle written by StyleGAN-XL')
    try:
        return float(_python(value))
    except (TypeError, ValueError):
        raise ConversionError(f'{view.path}.{name}: recorded {value!r}, not a number') from None


def _segments(names: list[str], layers: list[ModuleView]) -> list[list[str]]:
    """Split the recorded layer list where a stage begins (a non-critical layer whose band does not grow)."""
    segments: list[list[str]] = []
    for name, layer in zip(names, layers):
        starts = (not bool(_recorded(layer, 'is_critically_sampled'))
                  and math.isclose(_recorded(layer, 'in_cutoff'), _recorded(layer, 'out_cutoff'))
                  and int(_recorded(layer, 'in_sampling_rate')) == int(_recorded(layer, 'out_sampling_rate')))
        if starts or not segments:
            segments.append([])
        segments[-1].append(name)
    return segments


def _layer_mismatch(ours: nn.Module, recorded: ModuleView) -> Optional[str]:
    for fieldname in _LAYER_FIELDS:
        mine = getattr(ours, fieldname, None)
        if mine is None:
            mine = getattr(ours.spec, fieldname)
        theirs = recorded.get(fieldname)
        if theirs is None:
            return f'{recorded.path}.{fieldname} is not recorded'
        try:
            recorded_numbers = _numbers(theirs)
        except (TypeError, ValueError):
            return f'{recorded.path}.{fieldname}: recorded {theirs!r}, not a number'
        rebuilt = _numbers(mine)
        if rebuilt.size == 1 and recorded_numbers.size:  # ours keeps one side of a square size, upstream [w, h]
            rebuilt = np.broadcast_to(rebuilt, recorded_numbers.shape)
        if rebuilt.shape != recorded_numbers.shape or not np.allclose(rebuilt, recorded_numbers, rtol=1e-9, atol=0):
            return f'{recorded.path}.{fieldname}: recorded {_python(theirs)!r}, rebuilt {mine!r}'
    return None


def _chain_mismatch(spec: dict, names: list[str], layers: list[ModuleView]) -> Optional[str]:
    """First difference between the chain ``spec`` (built on the meta device) and the recorded layers."""
    with torch.device('meta'):
        G = build_generator(spec)
    if list(G.synthesis.layer_names) != names:
        return f'layer names {names} recorded, {list(G.synthesis.layer_names)} rebuilt'
    for name, layer in zip(names, layers):
        problem = _layer_mismatch(getattr(G.synthesis, name), layer)
        if problem:
            return problem
    return None


def infer_generator_spec(view: ModuleView) -> dict:
    """``{'cfg': ..., 'stages': [...]}`` (see :func:`san_ext.networks.generator_spec`) of a recorded generator."""
    _check_generator_record(view)
    mapping, synthesis = view.child('mapping'), view.child('synthesis')
    cfg = _stem_config(mapping, synthesis)
    names = list(synthesis.get('layer_names') or [])
    layers = [synthesis.child(n) for n in names]
    segments = _segments(names, layers)
    base = {'cfg': cfg.to_dict(), 'stages': []}
    if view.record.class_name == 'Generator':
        problem = _chain_mismatch(base, names, layers)
        if problem:
            raise ConversionError(f'{view.path}: cannot rebuild the recorded stem ({problem})')
        return base
    kwargs = view.record.init_kwargs
    n_stages = len(segments) - 1
    last_heads = int(kwargs.get('head_layers', len(segments[-1]) - 1))
    heads = [len(seg) + cfg.num_critical for seg in segments[1:-1]] + [last_heads]
    ratio = int(_recorded(view, 'img_resolution')) // cfg.img_resolution
    tried = []
    for ups in itertools.product(UP_FACTORS, repeat=n_stages):
        if math.prod(ups) != ratio or ('up_factor' in kwargs and ups[-1] != int(kwargs['up_factor'])):
            continue
        spec = {**base, 'stages': [dataclasses.asdict(SuperresConfig(h, u)) for h, u in zip(heads, ups)]}
        problem = _chain_mismatch(spec, names, layers)
        if problem is None:
            return spec
        tried.append(f'up-factors {ups}: {problem}')
    raise ConversionError(f'{view.path}: no superres chain with head_layers {heads} from {cfg.img_resolution}px to '
                          f'{cfg.img_resolution * ratio}px reproduces the recorded layers; tried '
                          f'{"; ".join(tried) or "nothing (the resolutions do not factor into 2, 4, 8, 16)"}')


def _rename(tensors: dict[str, torch.Tensor], cfg: GeneratorConfig, report: ConversionReport) -> dict:
    """Upstream's generator keys are ours; only the class embedding rows and the unconditional w_avg differ."""
    out = {}
    for key, t in tensors.items():
        if key == 'mapping.embed.weight':
            if cfg.c_dim == 0:
                report.drop(key, 'class embedding of an unconditional generator (upstream loads it, never uses it)')
                continue
            if t.shape[0] > cfg.c_dim:
                report.rewritten.append(f'{key}: first {cfg.c_dim} of {t.shape[0]} rows kept (labels index rows '
                                        f'0..{cfg.c_dim - 1} only)')
                t = t[:cfg.c_dim]
        elif key == 'mapping.w_avg' and t.ndim == 1:
            t = t.unsqueeze(0)  # unconditional upstream keeps [w_dim]; ours is [1, w_dim]
        out[key] = t
    return out


def convert_generator(record: Any, name: str = 'G', strict: bool = True) -> tuple[nn.Module, ConversionReport]:
    """Our generator (eval mode, frozen) holding the recorded weights, and the conversion report."""
    view = ModuleView(record, name)
    spec = infer_generator_spec(view)
    cfg = GeneratorConfig.from_dict(spec['cfg'])
    report = ConversionReport(name)
    tensors = _rename(view.tensors(), cfg, report)
    with torch.device('meta'):
        G = build_generator(spec)
    load_converted(G, tensors, report, strict=strict, assign=True)
    if spec['stages']:
        G.freeze_stem()
    _check_mapping(view, G, report)
    unknown = set(view.child('synthesis').record.init_kwargs) - _KNOWN_SYNTH_KEYS
    if unknown:
        report.warn(f'recorded synthesis options not taken over: {sorted(unknown)}')
    return G.eval().requires_grad_(False), report


def _check_mapping(view: ModuleView, G: nn.Module, report: ConversionReport) -> None:
    recorded = view.child('mapping').get('num_ws')
    if recorded is not None and int(recorded) != G.num_ws:
        raise ConversionError(f'{view.path}.mapping.num_ws is {recorded}, the rebuilt generator has {G.num_ws}')
    clamps = {_python(view.child('synthesis').child(n).get('conv_clamp')) for n in G.synthesis.layer_names}
    if clamps != {G.cfg.conv_clamp}:
        report.warn(f'recorded conv_clamp values {sorted(map(str, clamps))} differ from ours ({G.cfg.conv_clamp}); '
                    'upstream gives superres heads conv_clamp=256 even for --fp32 stems')
