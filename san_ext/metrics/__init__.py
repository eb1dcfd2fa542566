"""GAN evaluation metrics: FID, KID, IS, improved precision/recall and density/coverage, streamed over a generator
and a reference set, with pluggable feature extractors and cached reference statistics. See docs/METRICS.md.

Importing loads no network and downloads nothing; weight files are looked up when an extractor is built.
"""

from .accumulators import FeatureBank, Reservoir
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
from .stats import StreamingStats, frechet_distance
from .weights import INCEPTION_WEIGHTS, VGG16_WEIGHTS, WeightFile, WeightsNotFoundError, find_weights

__all__ = ['INCEPTION_WEIGHTS', 'VGG16_WEIGHTS', 'CallableExtractor', 'FeatureBank', 'FeatureExtractor',
           'InceptionScoreStats', 'MetricOptions', 'MetricResult', 'MetricSpec', 'Reservoir', 'StreamingStats',
           'WeightFile', 'WeightsNotFoundError', 'compute_metric', 'compute_metrics', 'density_coverage',
           'find_weights', 'frechet_distance', 'get_extractor', 'get_metric', 'inception_score',
           'kernel_inception_distance', 'knn_radii', 'list_extractors', 'list_metrics', 'mmd2_unbiased',
           'precision_recall', 'register_extractor', 'register_metric', 'unregister_extractor', 'unregister_metric',
           'write_result']
