"""Datasets in StyleGAN's format: the reader (``ImageDataset``), the converters behind ``dataset_tool.py``, the
built-in digits, and the sampler that fixes the training order (``InfiniteBatchSampler``).
"""

from .builtin import load_digits_images
from .converters import TRANSFORMS, ConvertConfig, ConvertResult, convert_dataset, make_digits_dataset
from .dataset import ImageDataset, open_dataset
from .sampler import InfiniteBatchSampler
from .sources import SOURCE_KINDS, detect_source_kind
from .storage import DatasetError

__all__ = ['SOURCE_KINDS', 'TRANSFORMS', 'ConvertConfig', 'ConvertResult', 'DatasetError', 'ImageDataset',
           'InfiniteBatchSampler', 'convert_dataset', 'detect_source_kind', 'load_digits_images',
           'make_digits_dataset', 'open_dataset']
