"""GAN evaluation metrics: FID, FD_DINOv2, KID, IS, improved precision/recall and density/coverage, streamed over a
generator and a reference set, with pluggable feature extractors and cached reference statistics; and the ADM
evaluator's suite (FID, sFID, IS, precision/recall) against ADM reference batches. See docs/METRICS.md.

Importing loads no network and downloads nothing; weight files are looked up when an extractor is built.
"""

from .accumulators import FeatureBank, Reservoir
from .adm import compute_adm
from .dinov2 import DINOV2_VITL14, DinoV2Arch
from .features import (
    CallableExtractor,
    FeatureExtractor,
    get_extractor,
    list_extractors,
    register_extractor,
    unregister_extractor,
)
from .inception_score import InceptionScoreStats, inception_score
from .kid import kernel_inception_distance, mmd2_unbiased
from .manifold import density_coverage, knn_radii, precision_recall
from .metrics import (
    MetricOptions,
    MetricResult,
    MetricSpec,
    compute_metric,
    compute_metrics,
    get_metric,
    list_metrics,
    register_metric,
    unregister_metric,
    write_result,
)
from .npz import NpzBatch, read_npz, write_npz, write_sample_batch
from .stats import StreamingStats, frechet_distance
from .weights import (
    DINOV2_VITL14_WEIGHTS,
    INCEPTION_WEIGHTS,
    VGG16_WEIGHTS,
    WeightFile,
    WeightsNotFoundError,
    find_weights,
)

__all__ = ['DINOV2_VITL14', 'DINOV2_VITL14_WEIGHTS', 'INCEPTION_WEIGHTS', 'VGG16_WEIGHTS', 'CallableExtractor',
           'DinoV2Arch', 'FeatureBank', 'FeatureExtractor', 'InceptionScoreStats', 'MetricOptions', 'MetricResult',
           'MetricSpec', 'NpzBatch', 'Reservoir', 'StreamingStats', 'WeightFile', 'WeightsNotFoundError', 'compute_adm',
           'compute_metric', 'compute_metrics', 'density_coverage', 'find_weights', 'frechet_distance', 'get_extractor',
           'get_metric', 'inception_score', 'kernel_inception_distance', 'knn_radii', 'list_extractors', 'list_metrics',
           'mmd2_unbiased', 'precision_recall', 'read_npz', 'register_extractor', 'register_metric',
           'unregister_extractor', 'unregister_metric', 'write_npz', 'write_result', 'write_sample_batch']
