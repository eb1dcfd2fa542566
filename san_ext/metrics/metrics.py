"""The metric registry and pipeline: generator samples and a reference set -> features -> accumulators -> score.

Registered (StyleGAN2/3 names and counts):

| name | score | features | generated | reference |
|---|---|---|---|---|
| ``fid50k_full``, ``fid10k_full`` | FID | inception pool3 | 50k, 10k | all images |
| ``fd_dinov2_50k_full``, ``fd_dinov2_10k`` | FD_DINOv2 (``dinov2.py``) | dinov2 CLS token | 50k, 10k | all, up to 10k |
| ``kid50k_full`` | KID (mean, std over 100 subsets of 1000) | inception pool3 | 50k | up to 1M |
| ``is50k`` | Inception Score (10 splits) | inception logits | 50k | none |
| ``pr50k3_full`` | improved precision/recall, k = 3 | vgg16 fc2 | 50k | up to 200k |
| ``dc50k`` | density/coverage, k = 5 | vgg16 fc2 | 50k | up to 50k |
| ``stacked_modes`` | modes, KL to uniform, confident share (``stacked.py``) | digits_cnn per channel | 26k | none |

Memory: FID and IS stream (float64 sums); KID keeps a uniform reservoir of at most 50k features per side
(``accumulators.Reservoir``); precision/recall and density/coverage keep all features in float16 and compute
neighbourhoods block by block. In a process group every rank scores a share of the samples and of the
reference set and the accumulators are reduced over ranks; every rank returns the same result (only rank 0 should
write it: :func:`write_result` does nothing elsewhere). Reference accumulators are cached on disk (``cache.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from san_ext import dist

from . import cache
from .accumulators import FeatureBank, Reservoir
from .features import FeatureExtractor, extractor_weights, get_extractor
from .inception_score import InceptionScoreStats
from .kid import kernel_inception_distance
from .manifold import density_coverage, precision_recall
from .sampling import accumulate, dataset_images, generated_images
from .stacked import NUM_GEN as STACKED_NUM_GEN
from .stacked import STACKED_EXTRACTOR, make_histogram, score_modes
from .stats import StreamingStats, frechet_distance

__all__ = ['KINDS', 'MetricOptions', 'MetricResult', 'MetricSpec', 'compute_metric', 'compute_metrics', 'get_metric',
           'list_metrics', 'register_metric', 'unregister_metric', 'write_result']

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
KID_CAPACITY = 50_000  # most features a KID reservoir keeps per side
REF_SEED = 0  # reference reservoirs and subsets do not follow --seed, so their cache entries are shared


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its score ``kind``, default extractor and sample counts."""

    name: str
    kind: str  # key of KINDS: 'fid', 'kid', 'is', 'pr', 'dc', 'modes'
    extractor: str  # registered feature extractor used unless MetricOptions.extractor overrides it
    num_gen: int  # generated samples
    max_ref: Optional[int]  # reference images (a fixed random subset when the set is larger); None: all; 0: none
    k: int = 0  # neighbourhood size for 'pr' and 'dc'


@dataclass(frozen=True)
class MetricOptions:
    """How to run metrics; None fields fall back to each metric's own setting."""

    num_gen: Optional[int] = None  # generated samples, overriding MetricSpec.num_gen
    max_ref: Optional[int] = None  # cap on reference images (applied on top of MetricSpec.max_ref)
    extractor: Optional[str] = None  # feature extractor for every metric (a custom one's outputs are IS logits)
    weights: Optional[str] = None  # weight file, or a folder holding the extractors' weight files
    batch_size: int = 64  # images per forward pass per rank
    seed: int = 0  # latents, classes and KID subsets
    device: str = 'cpu'
    num_workers: int = 3  # DataLoader workers reading the reference set
    cache: bool = True  # reuse and write cached reference accumulators
    cache_dir: Optional[str] = None  # default $SAN_EXT_CACHE/metrics or ~/.cache/san_ext/metrics
    progress: bool = True  # tqdm bars (rank 0)


@dataclass(frozen=True)
class MetricResult:
    """One metric's scores and everything needed to compare them with other numbers."""

    metric: str
    results: dict[str, float]
    extractor: str
    extractor_version: str
    resize: str
    num_gen: int
    num_ref: int
    total_time: float
    data: Optional[str]
    seed: int
    num_gpus: int
    protocol: str = 'stylegan'  # 'stylegan': G vs a dataset (this module); 'adm': ADM's evaluator suite (adm.py)
    reference: Optional[dict] = None  # what the reference was: a dataset's path, content hash and count, or an npz
    samples: Optional[dict] = None  # where the scored samples came from: a generator (classes, psi) or an npz


_METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec, overwrite: bool = False) -> MetricSpec:
    """Add ``spec`` to the registry under ``spec.name``."""
    if spec.kind not in KINDS:
        raise ValueError(f'unknown metric kind {spec.kind!r}; known: {", ".join(sorted(KINDS))}')
    if spec.name in _METRICS and not overwrite:
        raise ValueError(f'metric {spec.name!r} is already registered')
    _METRICS[spec.name] = spec
    return spec


def unregister_metric(name: str) -> None:
    """Remove metric ``name`` from the registry (e.g. a test's own); unknown names fail listing the known ones."""
    get_metric(name)
    del _METRICS[name]


def list_metrics() -> list[str]:
    """Registered metric names, sorted."""
    return sorted(_METRICS)


def get_metric(name: str) -> MetricSpec:
    """The registered metric ``name``; unknown names list the known ones."""
    if name not in _METRICS:
        raise ValueError(f'unknown metric {name!r}; known: {", ".join(list_metrics())}')
    return _METRICS[name]


# ---------------------------------------------------------------------------------------------------------------
# Kinds: which accumulator each side uses, and the score from the two.

@dataclass(frozen=True)
class _Kind:
    make: Callable[[MetricSpec, FeatureExtractor, int, bool, MetricOptions], Any]  # (spec, ext, n, is_ref, opts)
    load: Optional[Callable[[dict, MetricOptions], Any]]  # reference accumulator from cached arrays
    what: str  # cache file tag
    score: Callable[[MetricSpec, Any, Any, MetricOptions], dict[str, float]]


def _fid(spec: MetricSpec, gen: StreamingStats, ref: StreamingStats, opts: MetricOptions) -> dict[str, float]:
    return {spec.name: frechet_distance(gen.mean(), gen.cov(), ref.mean(), ref.cov())}


def _kid(spec: MetricSpec, gen: Reservoir, ref: Reservoir, opts: MetricOptions) -> dict[str, float]:
    mean, std = kernel_inception_distance(gen.features, ref.features, seed=opts.seed)
    return {spec.name: mean, f'{spec.name}_std': std}


def _is(spec: MetricSpec, gen: InceptionScoreStats, ref: None, opts: MetricOptions) -> dict[str, float]:
    mean, std = gen.result()
    return {f'{spec.name}_mean': mean, f'{spec.name}_std': std}


def _pr(spec: MetricSpec, gen: FeatureBank, ref: FeatureBank, opts: MetricOptions) -> dict[str, float]:
    p, r = precision_recall(ref.features.to(opts.device), gen.features.to(opts.device), k=spec.k)
    return {f'{spec.name}_precision': p, f'{spec.name}_recall': r}


def _dc(spec: MetricSpec, gen: FeatureBank, ref: FeatureBank, opts: MetricOptions) -> dict[str, float]:
    d, c = density_coverage(ref.features.to(opts.device), gen.features.to(opts.device), k=spec.k)
    return {f'{spec.name}_density': d, f'{spec.name}_coverage': c}


def _stats(spec: MetricSpec, ext: FeatureExtractor, n: int, is_ref: bool, opts: MetricOptions) -> StreamingStats:
    return StreamingStats(ext.dim, device=opts.device)


def _reservoir(spec: MetricSpec, ext: FeatureExtractor, n: int, is_ref: bool, opts: MetricOptions) -> Reservoir:
    return Reservoir(ext.dim, capacity=KID_CAPACITY, seed=REF_SEED if is_ref else opts.seed + 1)


def _splits(spec: MetricSpec, ext: FeatureExtractor, n: int, is_ref: bool, opts: MetricOptions) -> InceptionScoreStats:
    return InceptionScoreStats(ext.dim, n)


def _bank(spec: MetricSpec, ext: FeatureExtractor, n: int, is_ref: bool, opts: MetricOptions) -> FeatureBank:
    return FeatureBank(ext.dim)


def _load_stats(arrays: dict, opts: MetricOptions) -> StreamingStats:
    return StreamingStats.from_state_dict(arrays, device=opts.device)


def _load_reservoir(arrays: dict, opts: MetricOptions) -> Reservoir:
    return Reservoir.from_state_dict(arrays)


def _load_bank(arrays: dict, opts: MetricOptions) -> FeatureBank:
    return FeatureBank.from_state_dict(arrays)


KINDS: dict[str, _Kind] = {
    'fid': _Kind(_stats, _load_stats, 'stats', _fid),
    'kid': _Kind(_reservoir, _load_reservoir, f'reservoir{KID_CAPACITY}', _kid),
    'is': _Kind(_splits, None, '', _is),
    'pr': _Kind(_bank, _load_bank, 'bank', _pr),
    'dc': _Kind(_bank, _load_bank, 'bank', _dc),
    'modes': _Kind(make_histogram, None, '', score_modes),  # stacked digits: no reference set
}

for _spec in (MetricSpec('fid50k_full', 'fid', 'inception', 50_000, None),
              MetricSpec('fid10k_full', 'fid', 'inception', 10_000, None),
              MetricSpec('kid50k_full', 'kid', 'inception', 50_000, 1_000_000),
              MetricSpec('is50k', 'is', 'inception_logits', 50_000, 0),
              MetricSpec('pr50k3_full', 'pr', 'vgg16', 50_000, 200_000, k=3),
              MetricSpec('dc50k', 'dc', 'vgg16', 50_000, 50_000, k=5),
              MetricSpec('stacked_modes', 'modes', STACKED_EXTRACTOR, STACKED_NUM_GEN, 0)):
    register_metric(_spec)

# FD_DINOv2 (Stein et al. 2023; EDM2): FID's statistics on DINOv2 ViT-L/14 features. StyleGAN's naming: `_full` scores
# against all reference images; fd_dinov2_10k (tracking during training) against a fixed random 10k subset.
for _spec in (MetricSpec('fd_dinov2_50k_full', 'fid', 'dinov2', 50_000, None),
              MetricSpec('fd_dinov2_10k', 'fid', 'dinov2', 10_000, 10_000)):
    register_metric(_spec)


# ---------------------------------------------------------------------------------------------------------------
# Pipeline.

def _max_ref(spec: MetricSpec, opts: MetricOptions) -> Optional[int]:
    caps = [m for m in (spec.max_ref, opts.max_ref) if m is not None]
    return min(caps) if caps else None


def _open_reference(data: Union[PathLike, Sequence], max_ref: Optional[int]) -> tuple[Sequence, Optional[Path]]:
    if isinstance(data, (str, os.PathLike)):
        from san_ext.data import open_dataset  # metrics read data directly, never through training

        return open_dataset(data, max_size=max_ref), Path(data)
    return data, None  # a ready dataset object: used as given, never cached


def _all_ranks(flag: bool) -> bool:
    count = dist.all_reduce_sum(torch.tensor([int(flag)]))
    return int(count.item()) == dist.world_size()


def _reference(spec: MetricSpec, ext: FeatureExtractor, data, opts: MetricOptions) -> tuple[Any, int, dict]:
    """The reference accumulator of ``spec`` (cached on disk when ``data`` is a path), the images it holds and a
    description for the record (path, content hash, count, cap)."""
    kind = KINDS[spec.kind]
    max_ref = _max_ref(spec, opts)
    dataset, path = _open_reference(data, max_ref)
    info = {'type': 'in-memory dataset', 'images': len(dataset)}
    if path is not None:
        info = {'type': 'dataset', 'path': str(path), 'content_sha256': cache.dataset_fingerprint(path),
                'images': len(dataset), 'max_ref': max_ref, 'subset_seed': 0}
    file = key = None
    if path is not None and opts.cache:
        key = {'version': cache.CACHE_VERSION, 'dataset': info['content_sha256'], 'num_images': len(dataset),
               'max_size': max_ref, 'subset_seed': 0, 'resolution': getattr(dataset, 'resolution', None),
               'extractor': ext.name, 'extractor_version': ext.version, 'dim': ext.dim, 'what': kind.what}
        file = cache.cache_path(key, path.stem, f'{ext.name}-{kind.what}', opts.cache_dir)
        arrays = cache.load_entry(file, key)
        if _all_ranks(arrays is not None):
            log.info('%s: reference from cache %s', spec.name, file)
            return kind.load(arrays, opts), len(dataset), info
    acc = kind.make(spec, ext, len(dataset), True, opts)
    accumulate(dataset_images(dataset, opts.batch_size, opts.num_workers), ext, acc, len(dataset),
               f'{spec.name} reference', opts.device, opts.progress)
    acc.all_reduce()
    if file is not None and dist.rank() == 0:
        cache.save_entry(file, key, acc.state_dict())
    dist.barrier()
    return acc, len(dataset), info


def _extractor_for(name: str, opts: MetricOptions, built: dict[str, FeatureExtractor]) -> FeatureExtractor:
    if name not in built:
        kw = {'weights': opts.weights} if opts.weights is not None and extractor_weights(name) else {}
        ext = get_extractor(name, **kw)
        built[name] = ext.to(opts.device) if isinstance(ext, torch.nn.Module) else ext
    return built[name]


def _samples_info(G: Callable) -> dict:
    """How :func:`~san_ext.metrics.sampling.generated_images` draws: z ~ N(0, I), uniform classes, psi = 1."""
    c_dim = int(getattr(G, 'c_dim', 0))
    return {'source': 'generator', 'classes': f'uniform over {c_dim}' if c_dim else 'none', 'truncation_psi': 1.0}


def compute_metrics(names: Sequence[str], G: Callable, data: Union[PathLike, Sequence, None],
                    opts: MetricOptions = MetricOptions()) -> list[MetricResult]:
    """Compute each metric in ``names`` for generator ``G(z, c) -> images in [-1, 1]`` (with ``z_dim`` and
    ``c_dim`` attributes) against ``data``: a StyleGAN zip or folder path (cached), or a map-style dataset of
    ``(uint8 [C, H, W], label)`` items. Collective in a process group: call on every rank."""
    specs = [get_metric(n) for n in names]  # fail on a typo before any work
    built: dict[str, FeatureExtractor] = {}
    results = []
    for spec in specs:
        start = time.time()
        ext = _extractor_for(opts.extractor or spec.extractor, opts, built)
        ref, num_ref, ref_info = None, 0, None
        if spec.max_ref != 0:
            if data is None:
                raise ValueError(f'{spec.name} needs a reference dataset')
            ref, num_ref, ref_info = _reference(spec, ext, data, opts)
        num_gen = opts.num_gen or spec.num_gen
        gen = KINDS[spec.kind].make(spec, ext, num_gen, False, opts)
        accumulate(generated_images(G, num_gen, opts.batch_size, opts.seed, opts.device), ext, gen, num_gen,
                   f'{spec.name} generated', opts.device, opts.progress)
        gen.all_reduce()
        scores = KINDS[spec.kind].score(spec, gen, ref, opts)
        result = MetricResult(metric=spec.name, results=scores, extractor=ext.name, extractor_version=ext.version,
                              resize=ext.resize, num_gen=num_gen, num_ref=num_ref, total_time=time.time() - start,
                              data=None if data is None or not isinstance(data, (str, os.PathLike)) else str(data),
                              seed=opts.seed, num_gpus=dist.world_size(), protocol='stylegan', reference=ref_info,
                              samples=_samples_info(G))
        log.info('%s: %s (%.1f s)', spec.name, json.dumps(scores), result.total_time)
        results.append(result)
    return results


def compute_metric(name: str, G: Callable, data: Union[PathLike, Sequence, None],
                   opts: MetricOptions = MetricOptions()) -> MetricResult:
    """:func:`compute_metrics` for one metric."""
    return compute_metrics([name], G, data, opts)[0]


def write_result(result: MetricResult, run_dir: PathLike, network: Optional[str] = None,
                 extra: Optional[dict] = None) -> Optional[Path]:
    """Append ``result`` as one JSON line to ``run_dir/metric-{name}.jsonl`` (rank 0 only; returns the file);
    ``extra`` (JSON-serialisable, e.g. the DOT settings) is stored under its own keys."""
    if dist.rank() != 0:
        return None
    record = {'results': result.results, **{k: v for k, v in dataclasses.asdict(result).items() if k != 'results'},
              'network': network, **dict(extra or {}), 'timestamp': time.time()}
    file = Path(run_dir) / f'metric-{result.metric}.jsonl'
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')
    return file
