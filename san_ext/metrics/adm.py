"""The ADM evaluation protocol (Dhariwal & Nichol 2021; openai/guided-diffusion ``evaluations/evaluator.py``): FID,
sFID, Inception Score and improved precision/recall of a sample batch against an ADM reference batch such as
``VIRTUAL_imagenet256_labeled.npz``, as the one-step ImageNet generators report them.

One pass of the TF ``inception-2015-12-05`` graph (torch-fidelity's port, TF1 bilinear resize to 299) gives, per
image, what ADM's evaluator reads from that graph:

- ``pool_3`` [2048]: FID, and precision/recall (k = 3, distances ``<=`` the radius, Kynkäänniemi et al. 2019);
- ``mixed_6/conv`` [17, 17, 768], first 7 channels, flattened in TF's NHWC order [2023]: sFID (Nash et al. 2021).
  In torch-fidelity's module names this is ``Mixed_6d.branch1x1`` (TF's ``mixed``, ``mixed_1``, ... count the
  Inception blocks from ``Mixed_5b``; ``conv`` is a block's 1x1 branch, after batch norm and ReLU);
- the softmax of ``pool_3`` times the logits weight without bias [1008]: IS, mean over consecutive splits of 5000.

The reference's FID/sFID statistics are the npz's ``mu``/``sigma`` and ``mu_s``/``sigma_s`` when present (ImageNet's
cover the whole training set), else computed from its ``arr_0``; precision/recall always use ``arr_0``'s images
(10k for ImageNet) against all samples. Covariances divide by n - 1 (``np.cov``), as ADM's do. Reference features
are cached like the registry's (``cache.py``), and every pass is sharded over ranks like theirs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from san_ext import dist

from . import cache
from .accumulators import FeatureBank
from .features import FeatureExtractor, _Extractor, _import_torch_fidelity
from .inception_score import InceptionScoreStats
from .manifold import precision_recall
from .metrics import MetricOptions, MetricResult, _all_ranks, _samples_info
from .npz import NpzBatch, read_npz
from .sampling import accumulate, dataset_images, generated_images
from .stats import StreamingStats, frechet_distance
from .weights import INCEPTION_WEIGHTS, find_weights, load_state_dict

__all__ = ['ADM_DIMS', 'ADM_IS_SPLIT', 'ADM_NUM_GEN', 'ADM_PR_K', 'ADM_SPATIAL_CHANNELS', 'adm_inception',
           'compute_adm']

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
ADM_SPATIAL_CHANNELS = 7  # evaluator.py: spatial[..., :7]
ADM_DIMS = (2048, ADM_SPATIAL_CHANNELS * 17 * 17, 1008)  # pool_3, mixed_6/conv[..., :7], logits
ADM_IS_SPLIT = 5000  # compute_inception_score(split_size=5000)
ADM_PR_K = 3  # ManifoldEstimator(nhood_sizes=(3,))
ADM_NUM_GEN = 50_000  # sample batches hold 50,000 images


def spatial_features(x: torch.Tensor) -> torch.Tensor:
    """First ``ADM_SPATIAL_CHANNELS`` channels of a [N, C, H, W] activation, flattened as TF's NHWC tensor is:
    [N, H * W * 7], so the features line up with the ``mu_s``/``sigma_s`` of ADM's reference batches."""
    return x[:, :ADM_SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(x.shape[0], -1)


class _ADMInception(nn.Module):
    """torch-fidelity's InceptionV3 returning [pool3 | spatial | unbiased logits] from one forward pass."""

    def __init__(self, path: PathLike) -> None:
        super().__init__()
        inception, _ = _import_torch_fidelity()
        self.inception = inception.FeatureExtractorInceptionV3('inception-v3-compat', ['2048', 'logits_unbiased'],
                                                               feature_extractor_weights_path=str(path))
        self._spatial: Optional[torch.Tensor] = None
        self.inception.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module: nn.Module, args: Any, out: torch.Tensor) -> None:
        self._spatial = spatial_features(out)  # a copy: later in-place ops cannot touch it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pool, logits = self.inception(images)
        spatial, self._spatial = self._spatial, None
        return torch.cat([pool, spatial.float(), logits], dim=1)  # [N, 2048 + 2023 + 1008]


def adm_inception(weights: Optional[PathLike] = None) -> FeatureExtractor:
    """The ADM evaluator's features, concatenated: pool3 [2048], spatial [2023], unbiased logits [1008]. Uses the
    ``inception`` extractor's weight file (same search, same offline error)."""
    path = find_weights(INCEPTION_WEIGHTS, weights)
    _, sha = load_state_dict(INCEPTION_WEIGHTS, path)
    version = f'tf-inception-2015-12-05/{sha[:8]}/pool3+mixed_6.conv7+logits_unbiased'
    return _Extractor(_ADMInception(path), 'inception_adm', sum(ADM_DIMS), version, 'tf1-bilinear-299').eval()


# ---------------------------------------------------------------------------------------------------------------
# Accumulating column blocks of one feature tensor.

@dataclass
class _Parts:
    """Feeds column blocks of one feature tensor [N, sum(dims)] to named accumulators: name -> (block, acc)."""

    parts: dict[str, tuple[slice, Any]]

    def update(self, x: torch.Tensor, indices: torch.Tensor) -> _Parts:
        for block, acc in self.parts.values():
            acc.update(x[:, block], indices)
        return self

    def all_reduce(self) -> _Parts:
        for _, acc in self.parts.values():
            acc.all_reduce()
        return self

    def state_dict(self) -> dict:
        return {f'{name}/{k}': v for name, (_, acc) in self.parts.items() for k, v in acc.state_dict().items()}

    def __getitem__(self, name: str) -> Any:
        return self.parts[name][1]


def _blocks(dims: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    pool, spatial, _ = dims
    return slice(0, pool), slice(pool, pool + spatial), slice(pool + spatial, sum(dims))


def _sample_parts(dims: tuple[int, int, int], num: int, device: str) -> _Parts:
    pool, spatial, logits = _blocks(dims)
    return _Parts({'pool': (pool, StreamingStats(dims[0], device=device)),
                   'spatial': (spatial, StreamingStats(dims[1], device=device)),
                   'is': (logits, InceptionScoreStats(dims[2], num, split_size=ADM_IS_SPLIT)),
                   'bank': (pool, FeatureBank(dims[0]))})


def _reference_parts(dims: tuple[int, int, int], with_stats: bool, device: str) -> _Parts:
    pool, spatial, _ = _blocks(dims)
    parts = {'bank': (pool, FeatureBank(dims[0]))}
    if with_stats:
        parts.update(pool=(pool, StreamingStats(dims[0], device=device)),
                     spatial=(spatial, StreamingStats(dims[1], device=device)))
    return _Parts(parts)


def _load_parts(parts: _Parts, arrays: dict, device: str) -> _Parts:
    """``parts`` with each accumulator replaced by its state from a cache entry's ``name/key`` arrays."""
    out = {}
    for name, (block, acc) in parts.parts.items():
        state = {k.split('/', 1)[1]: v for k, v in arrays.items() if k.startswith(f'{name}/')}
        loaded = FeatureBank.from_state_dict(state) if isinstance(acc, FeatureBank) else \
            StreamingStats.from_state_dict(state, device=device)
        out[name] = (block, loaded)
    return _Parts(out)


# ---------------------------------------------------------------------------------------------------------------
# The suite.

def _reference(batch: NpzBatch, ext: FeatureExtractor, dims: tuple[int, int, int], opts: MetricOptions) -> _Parts:
    """Features of the reference batch's images: always the pool3 bank (precision/recall), plus FID/sFID statistics
    when the npz has none. Cached on disk by the npz's content hash and the extractor, like the registry's."""
    parts = _reference_parts(dims, batch.stats is None, opts.device)
    file = key = None
    if opts.cache:
        key = {'version': cache.CACHE_VERSION, 'npz': batch.content_sha256, 'num_images': batch.num_images,
               'extractor': ext.name, 'extractor_version': ext.version, 'dims': list(dims),
               'what': 'adm-' + '+'.join(sorted(parts.parts))}
        file = cache.cache_path(key, batch.path.stem, f'{ext.name}-adm', opts.cache_dir)
        arrays = cache.load_entry(file, key)
        if _all_ranks(arrays is not None):
            log.info('adm: reference features from cache %s', file)
            return _load_parts(parts, arrays, opts.device)
    accumulate(dataset_images(batch.images, opts.batch_size, opts.num_workers), ext, parts, batch.num_images,
               'adm reference', opts.device, opts.progress)
    parts.all_reduce()
    if file is not None and dist.rank() == 0:
        cache.save_entry(file, key, parts.state_dict())
    dist.barrier()
    return parts


def _moments(stats: Optional[dict], mu: str, sigma: str, acc: Optional[StreamingStats]) -> tuple[Any, Any]:
    """(mean, covariance): the npz's ``stats[mu], stats[sigma]`` when it has statistics, else ``acc``'s."""
    return (stats[mu], stats[sigma]) if stats is not None else (acc.mean(), acc.cov())


def _scores(gen: _Parts, ref: _Parts, ref_stats: Optional[dict], sample_stats: Optional[dict], device: str
            ) -> dict[str, float]:
    """ADM's five numbers. Like ADM's ``read_statistics``, precomputed statistics in either npz take precedence
    over the ones computed from its images."""
    fd = {}
    for name, mu, sigma in (('pool', 'mu', 'sigma'), ('spatial', 'mu_s', 'sigma_s')):
        g = _moments(sample_stats, mu, sigma, gen[name])
        r = _moments(ref_stats, mu, sigma, None if ref_stats is not None else ref[name])
        fd[name] = frechet_distance(*g, *r)
    precision, recall = precision_recall(ref['bank'].features.to(device), gen['bank'].features.to(device), k=ADM_PR_K)
    return {'adm_fid': fd['pool'], 'adm_sfid': fd['spatial'], 'adm_is': gen['is'].result()[0],
            'adm_precision': precision, 'adm_recall': recall}


def _npz_info(batch: NpzBatch) -> dict:
    stats = 'npz mu/sigma, mu_s/sigma_s' if batch.stats is not None else f'computed from arr_0 ({batch.num_images})'
    return {'type': 'adm-npz', 'path': str(batch.path), 'content_sha256': batch.content_sha256,
            'images': batch.num_images, 'resolution': list(batch.resolution), 'statistics': stats}


def compute_adm(ref_npz: PathLike, G: Optional[Callable] = None, samples_npz: Optional[PathLike] = None,
                opts: Optional[MetricOptions] = None, extractor: Optional[FeatureExtractor] = None,
                dims: Optional[tuple[int, int, int]] = None) -> MetricResult:
    """ADM's FID, sFID, IS and precision/recall of ``G(z, c)`` (``opts.num_gen`` samples, default 50,000, drawn as
    the registry's metrics draw them) or of the sample batch ``samples_npz``, against the reference batch
    ``ref_npz``. ``extractor`` (default :func:`adm_inception`) returns [pool | spatial | logits] with sizes ``dims``
    (default ``ADM_DIMS``). Collective in a process group: call on every rank."""
    if (G is None) == (samples_npz is None):
        raise ValueError('compute_adm scores either a generator G or a samples_npz, exactly one of them')
    opts = opts if opts is not None else MetricOptions()
    dims = tuple(dims) if dims is not None else ADM_DIMS
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f'dims must be three positive sizes (pool, spatial, logits), got {dims}')
    start = time.time()
    ref_batch = read_npz(ref_npz, stat_dims=dims[:2])
    sample_batch = None if samples_npz is None else read_npz(samples_npz, stat_dims=dims[:2])
    ext = extractor if extractor is not None else adm_inception(opts.weights)  # after the cheap checks above
    if isinstance(ext, nn.Module):
        ext = ext.to(opts.device)
    if ext.dim != sum(dims):
        raise ValueError(f'extractor {ext.name!r} gives {ext.dim} features, the ADM suite needs {sum(dims)} = '
                         f'{" + ".join(map(str, dims))} (pool, spatial, logits)')
    ref = _reference(ref_batch, ext, dims, opts)
    if sample_batch is not None:
        num_gen, samples_info = sample_batch.num_images, {**_npz_info(sample_batch), 'source': 'npz'}
        images = dataset_images(sample_batch.images, opts.batch_size, opts.num_workers)
    else:
        num_gen, samples_info = opts.num_gen or ADM_NUM_GEN, _samples_info(G)
        images = generated_images(G, num_gen, opts.batch_size, opts.seed, opts.device)
    gen = _sample_parts(dims, num_gen, opts.device)
    accumulate(images, ext, gen, num_gen, 'adm samples', opts.device, opts.progress)
    gen.all_reduce()
    scores = _scores(gen, ref, ref_batch.stats, None if sample_batch is None else sample_batch.stats, opts.device)
    return MetricResult(metric='adm', results=scores, extractor=ext.name, extractor_version=ext.version,
                        resize=ext.resize, num_gen=num_gen, num_ref=ref_batch.num_images,
                        total_time=time.time() - start, data=str(ref_batch.path), seed=opts.seed,
                        num_gpus=dist.world_size(), protocol='adm', reference=_npz_info(ref_batch),
                        samples=samples_info)
