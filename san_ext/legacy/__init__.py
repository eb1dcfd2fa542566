"""Safe import of released StyleGAN-XL / StyleSAN-XL network pickles into san_ext's networks.

``san_ext.legacy.load('imagenet128.pkl')`` reads the pickle with a restricted unpickler (nothing in the file is
imported, executed or called: see :mod:`san_ext.legacy.allowlist`), infers our generator and discriminator
configurations from the recorded constructor arguments and tensor shapes, renames the weights and loads them
strictly. The result holds our ``Generator`` / ``SuperresGenerator`` and ``ProjectedDiscriminator`` in eval mode,
ready to be a ``--path_stem`` for a new (SAN) super-resolution stage, to sample from, or to score images.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import nn

from san_ext.files import file_sha256
from san_ext.networks import (
    DiscriminatorConfig,
    GeneratorConfig,
    ProjectedDiscriminator,
    SuperresConfig,
    generator_spec,
)

from .convert import ConversionError, ConversionReport
from .discriminator import convert_discriminator, heads_kind
from .generator import convert_generator, infer_generator_spec
from .records import ModuleView, PersistentRecord, Record
from .unpickler import LegacyPickleError, RefusedError, RefusedGlobalError, read_pickle

__all__ = ['COMPONENTS', 'ConversionError', 'ConversionReport', 'LegacyConfig', 'LegacyNetworks',
           'LegacyPickleError', 'RefusedError', 'RefusedGlobalError', 'load', 'read_generator_spec', 'read_pickle']

COMPONENTS = ('G', 'G_ema', 'D')
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class LegacyConfig:
    """Our configuration of the converted networks: stem generator, superres stages, discriminator."""

    generator: GeneratorConfig
    stages: tuple[SuperresConfig, ...] = ()
    discriminator: Optional[DiscriminatorConfig] = None

    @property
    def generator_spec(self) -> dict:
        """The ``{'cfg', 'stages'}`` dict that :func:`san_ext.networks.build_generator` takes."""
        return {'cfg': self.generator.to_dict(), 'stages': [dataclasses.asdict(s) for s in self.stages]}


@dataclass
class LegacyNetworks:
    """Converted networks (eval mode, ``requires_grad`` off; None where not requested) and what was found."""

    G: Optional[nn.Module]
    G_ema: Optional[nn.Module]
    D: Optional[ProjectedDiscriminator]
    config: LegacyConfig
    meta: dict = field(default_factory=dict)   # source file, kind, training kwargs, progress, conversion reports


def _data(path: str, extra_classes: Iterable[tuple[str, str]]) -> dict:
    data = read_pickle(path, extra_classes)
    if not isinstance(data, dict) or not any(isinstance(data.get(k), Record) for k in COMPONENTS):
        kind = type(data).__name__
        raise LegacyPickleError(f'{path} holds a {kind}, not a StyleGAN-XL snapshot dict with G, G_ema and D')
    return data


_PLAIN_VALUES = 100_000  # most values copied from a pickle's training metadata (shared references count each time)
_PLAIN_DEPTH = 64  # deepest nesting copied


def _plain(value: Any, path: str = 'the pickle') -> Any:
    """JSON-friendly copy of recorded training metadata (tensors and numpy values become lists and numbers).

    The copy is bounded: metadata nested deeper than 64 levels, or holding more than 100,000 values (a structure
    that shares references is counted once per path, so a small file cannot make it explode), is refused with
    :class:`LegacyPickleError` naming ``path`` instead of running out of stack, time or memory.
    """
    left = [_PLAIN_VALUES]

    def spend(n: int, depth: int) -> None:
        left[0] -= n
        if left[0] < 0 or depth > _PLAIN_DEPTH:
            raise LegacyPickleError(f'{path}: its training metadata is too large or too deeply nested to record '
                                    f'(more than {_PLAIN_VALUES} values or {_PLAIN_DEPTH} levels); not a released '
                                    f'StyleGAN-XL pickle?')

    def copy(v: Any, depth: int) -> Any:
        spend(1, depth)
        if isinstance(v, dict):
            return {str(k): copy(x, depth + 1) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [copy(x, depth + 1) for x in v]
        if isinstance(v, torch.Tensor) or (hasattr(v, 'tolist') and hasattr(v, 'size') and not callable(v.size)):
            spend(int(v.numel() if isinstance(v, torch.Tensor) else v.size), depth)  # numpy: size is an attribute
            return v.tolist()
        if hasattr(v, 'item') and callable(v.item):
            return v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        return repr(v)

    return copy(value, 0)


def _meta(path: str, data: dict) -> dict:
    kind = 'unknown'
    if isinstance(data.get('D'), Record):
        try:  # a D that does not read stays 'unknown' here: converting it (when asked for) names the problem
            kind = 'stylesan-xl' if heads_kind(ModuleView(data['D'], 'D'))[1] else 'stylegan-xl'
        except ConversionError:
            pass
    sources = {k: data[k].module_src_sha256 for k in ('G', 'G_ema') if isinstance(data.get(k), PersistentRecord)}
    aug = data.get('augment_pipe')
    return {'source': os.path.abspath(path), 'sha256': file_sha256(path), 'kind': kind,
            'training_set_kwargs': _plain(data.get('training_set_kwargs'), path),
            'progress': _plain(data.get('progress'), path),
            'augment_pipe': None if aug is None else f'{getattr(aug, "qualname", type(aug).__name__)} (not converted)',
            'module_src_sha256': sources, 'reports': {}}


def load(path: PathLike, components: Sequence[str] = COMPONENTS, *, san: Optional[bool] = None,
         strict: bool = True, device: Union[str, torch.device] = 'cpu',
         extra_classes: Iterable[tuple[str, str]] = ()) -> LegacyNetworks:
    """Read a released StyleGAN-XL / StyleSAN-XL ``.pkl`` without running code from it; convert its networks.

    Args:
        components: which of ``'G'``, ``'G_ema'``, ``'D'`` to convert (a superres stem needs only ``G_ema``).
        san: discriminator heads of the result: None keeps the pickle's (plain for StyleGAN-XL, SAN for
            StyleSAN-XL); True turns plain heads into SAN heads with the same function; False refuses SAN heads.
        strict: every tensor must be mapped both ways; False loads what maps and lists the rest in the report.
        extra_classes: ``(module, name)`` pairs (``('persistent', name)`` for persistent classes) to read as inert
            records in addition to the allow-list.
    Raises:
        RefusedError: the pickle names something outside the allow-list (nothing was run).
        LegacyPickleError: not a network pickle. ConversionError: the networks do not map onto ours.
    """
    path = os.fspath(path)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ValueError(f'components must be a non-empty subset of {COMPONENTS}, got {tuple(components)}')
    data = _data(path, extra_classes)
    meta = _meta(path, data)
    nets: dict[str, Any] = {'G': None, 'G_ema': None, 'D': None}
    spec: Optional[dict] = None
    for name in ('G_ema', 'G'):
        if name in components:
            if not isinstance(data.get(name), Record):
                raise LegacyPickleError(f'{path} has no {name} network')
            nets[name], report = convert_generator(data[name], name, strict=strict)
            meta['reports'][name] = report.to_dict()
            this = generator_spec(nets[name])
            if spec is not None and this != spec:
                raise ConversionError(f'{path}: G and G_ema have different architectures ({this} vs {spec})')
            spec = this
    if spec is None and isinstance(data.get('G_ema'), Record):
        spec = infer_generator_spec(ModuleView(data['G_ema'], 'G_ema'))
    if spec is None:  # before converting D, which takes its class count and resolution from the generator
        raise LegacyPickleError(f'{path} has no generator to take the configuration from')
    gen = GeneratorConfig.from_dict(spec['cfg'])
    stages = tuple(SuperresConfig(**s) for s in spec['stages'])
    d_cfg = None
    if 'D' in components:
        if not isinstance(data.get('D'), Record):
            raise LegacyPickleError(f'{path} has no D network')
        res = gen.img_resolution * math.prod(s.up_factor for s in stages)
        nets['D'], report = convert_discriminator(data['D'], c_dim=gen.c_dim, img_resolution=res, san=san,
                                                  strict=strict)
        meta['reports']['D'] = report.to_dict()
        d_cfg = nets['D'].cfg
    config = LegacyConfig(gen, stages, d_cfg)
    moved = {k: (v.to(device) if v is not None else None) for k, v in nets.items()}
    return LegacyNetworks(G=moved['G'], G_ema=moved['G_ema'], D=moved['D'], config=config, meta=meta)


def read_generator_spec(path: PathLike, which: str = 'G_ema',
                        extra_classes: Iterable[tuple[str, str]] = ()) -> dict:
    """The generator architecture (``{'cfg', 'stages'}``) of a released pickle, without converting weights."""
    path = os.fspath(path)
    data = _data(path, extra_classes)
    if not isinstance(data.get(which), Record):
        raise LegacyPickleError(f'{path} has no {which} network')
    return infer_generator_spec(ModuleView(data[which], which))
