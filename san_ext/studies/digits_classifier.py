"""A small CNN classifier of scikit-learn's 8x8 digits, trained by the project itself, whose penultimate layer is
the feature space of the digits study's FID and precision/recall (``python -m san_ext.studies.digits``).

Why our own network: Inception and VGG features are trained on 299x299 / 224x224 photographs and need weights from
the internet; an 8x8 digit upsampled 37 times is far from their training data. A classifier of the digits
themselves sees what matters for digits (the stroke shapes that decide the class), as the MNIST studies'
LeNet-style "FID on a digits classifier" does.

Data and split: the 1,797 images of ``sklearn.datasets.load_digits`` at their native 8x8 (the resolution the GANs
of the study generate), through :func:`san_ext.data.load_digits_images` (values 0..16 scaled to uint8 0..255),
fed to the network as ``uint8 / 127.5 - 1`` in [-1, 1]. :func:`split_indices` holds out a stratified quarter:
per class a numpy ``default_rng(SPLIT_SEED)`` permutation (classes in order 0..9), the first ``round(n_c / 4)``
indices go to the test split: 1,347 train and 450 test images. (The split lives in :mod:`san_ext.data.builtin`, so
the stacked digits draw from the same train split.)

Network (:class:`DigitsCNN`, 40,394 parameters, 162 KB as float32 safetensors): conv3x3 16, conv3x3 32, maxpool,
conv3x3 64, maxpool, linear 256 -> 64 (ReLU: the 64-d features), dropout 0.25, linear 64 -> 10. It and its loader
live in :mod:`san_ext.metrics.digits_net` (metrics may not import studies) and are re-exported here.
Training (:func:`train_classifier`): Adam lr 1e-3, batch 32, 60 epochs, random shifts of up to one pixel
(zero-padded), one thread and a seeded ``torch.Generator`` for init, order, shifts and dropout, so the run is
deterministic on one machine. Floating-point reductions may differ between CPU kinds (AVX2 vs AVX-512), so the
weights are bit-for-bit reproducible only on a CPU like the one that trained them; the JSON record names it.

Regenerate the committed weights with one command::

    python -m san_ext.studies.digits_classifier --out san_ext/studies/weights

Importing this module registers the feature extractor ``digits_cnn`` in ``san_ext.metrics``' registry (the
registry's own pattern: a decorator at import, like the built-in extractors); it loads nothing until built.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from san_ext.data import load_digits_images
from san_ext.data.builtin import SPLIT_SEED, TEST_FRACTION, split_indices
from san_ext.files import file_sha256
from san_ext.metrics import CallableExtractor, FeatureExtractor, register_extractor
from san_ext.metrics.digits_net import (
    DEFAULT_WEIGHTS,
    FEATURE_DIM,
    REGENERATE,
    RESOLUTION,
    WEIGHTS_DIR,
    DigitsCNN,
    load_classifier,
    to_float,
)

from .common import single_thread

__all__ = ['DEFAULT_WEIGHTS', 'EXTRACTOR_NAME', 'FEATURE_DIM', 'ClassifierConfig', 'DigitsCNN', 'digits_cnn',
           'digits_data', 'evaluate_accuracy', 'load_classifier', 'save_classifier', 'split_indices',
           'to_float', 'train_classifier']

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
EXTRACTOR_NAME = 'digits_cnn'


# -- data ------------------------------------------------------------------------------------------------------
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 grey images [N, 8, 8] (0..255) and int64 labels [N]."""
    images, labels = load_digits_images(RESOLUTION)  # [N, 8, 8, 3], grey repeated
    return np.ascontiguousarray(images[..., 0]), labels


# -- network ---------------------------------------------------------------------------------------------------
class _Features(nn.Module):
    """The classifier's feature path as a module (what :class:`CallableExtractor` wraps)."""

    def __init__(self, net: DigitsCNN) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


# -- training --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierConfig:
    """Training recipe of the committed weights (module docstring gives the reasons)."""

    seed: int = 0
    epochs: int = 60
    batch: int = 32
    lr: float = 1e-3
    max_shift: int = 1  # random translation in pixels, zero-padded


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image [N, 1, H, W] by integers in [-max_shift, max_shift] per axis, filling with -1 (ink-free)."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, 1, h, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, 1, h, w)
    return out.gather(3, cols)


def train_classifier(cfg: ClassifierConfig, progress: bool = False) -> tuple[DigitsCNN, dict]:
    """Train :class:`DigitsCNN` on the train split in one thread; returns the network (eval mode) and a record
    (config, split sizes, test accuracy, seconds)."""
    from tqdm import tqdm

    with single_thread():  # one thread: the same reduction order on every run
        images, labels = digits_data()
        train_idx, test_idx = split_indices(labels)
        x, y = to_float(images[train_idx]), torch.from_numpy(labels[train_idx])
        gen = torch.Generator().manual_seed(cfg.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # init and dropout draw from the global generator: keep it scoped
            net = DigitsCNN()
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
            start = time.perf_counter()
            for _ in tqdm(range(cfg.epochs), desc='classifier', unit='epoch', disable=not progress):
                net.train()
                order = torch.randperm(len(x), generator=gen)
                for i in range(0, len(x), cfg.batch):
                    idx = order[i:i + cfg.batch]
                    loss = F.cross_entropy(net(_random_shift(x[idx], cfg.max_shift, gen)), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            seconds = time.perf_counter() - start
    net.eval()
    record = dict(config=asdict(cfg), split=dict(seed=SPLIT_SEED, test_fraction=TEST_FRACTION, stratified=True,
                                                 n_train=len(train_idx), n_test=len(test_idx)),
                  test_accuracy=evaluate_accuracy(net, images[test_idx], labels[test_idx]),
                  train_accuracy=evaluate_accuracy(net, images[train_idx], labels[train_idx]), train_s=seconds)
    return net, record


@torch.no_grad()
def evaluate_accuracy(net: DigitsCNN, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of uint8 grey ``images`` [N, 8, 8] that ``net`` (in eval mode) classifies as ``labels``."""
    pred = net.eval()(to_float(images)).argmax(dim=1).numpy()
    return float((pred == labels).mean())


# -- files -----------------------------------------------------------------------------------------------------
def save_classifier(net: DigitsCNN, record: dict, out: PathLike) -> tuple[Path, Path]:
    """Write ``digits_cnn.safetensors`` and ``digits_cnn.json`` (the record plus sha256, command, machine) to
    folder ``out``."""
    from safetensors.torch import save_file

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / DEFAULT_WEIGHTS.name
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(weights))
    meta = dict(record, file=weights.name, sha256=file_sha256(weights), bytes=weights.stat().st_size,
                parameters=sum(p.numel() for p in net.parameters()), feature_dim=FEATURE_DIM, command=REGENERATE,
                torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                machine=platform.machine())
    record_path = weights.with_suffix('.json')
    record_path.write_text(json.dumps(meta, indent=2) + '\n')
    return weights, record_path


def record_of(weights: Optional[PathLike] = None) -> dict:
    """The JSON record next to the weights (seed, split, accuracy, sha256, command)."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if path.is_dir():
        path = path / DEFAULT_WEIGHTS.name
    return json.loads(path.with_suffix('.json').read_text())


# -- feature extractor -----------------------------------------------------------------------------------------
def digits_cnn(weights: Optional[PathLike] = None) -> FeatureExtractor:
    """The classifier's 64-d penultimate features as a feature extractor: uint8 [N, 3, H, W] (grey repeated),
    averaged to one channel, resized to 8x8 when other, scaled to [-1, 1]."""
    net = load_classifier(weights)
    return CallableExtractor(_Features(net), EXTRACTOR_NAME, FEATURE_DIM, resize=RESOLUTION, in_chans=1,
                             value_range=(-1.0, 1.0)).eval()


with contextlib.suppress(ValueError):  # already registered: `python -m` runs this file as __main__ and may import it
    register_extractor(EXTRACTOR_NAME, digits_cnn)


# -- CLI -------------------------------------------------------------------------------------------------------
@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--out', type=click.Path(file_okay=False, path_type=Path), default=WEIGHTS_DIR, show_default=True,
              help='Folder for digits_cnn.safetensors and digits_cnn.json.')
@click.option('--seed', type=int, default=ClassifierConfig.seed, show_default=True,
              help='Seed of init, batch order, shifts and dropout (the split has its own fixed seed).')
@click.option('--epochs', type=click.IntRange(min=1), default=ClassifierConfig.epochs, show_default=True,
              help='Passes over the 1,347 training images.')
def main(out: Path, seed: int, epochs: int) -> None:
    """Train the digits classifier whose features score the digits study, and write its weights and record.

    \b
    Example (regenerates the committed weights, ~1 min on one core):
      python -m san_ext.studies.digits_classifier --out san_ext/studies/weights
    """
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    net, record = train_classifier(ClassifierConfig(seed=seed, epochs=epochs), progress=True)
    weights, meta = save_classifier(net, record, out)
    click.echo(f'test accuracy {record["test_accuracy"]:.4f} ({record["split"]["n_test"]} held-out images), '
               f'train accuracy {record["train_accuracy"]:.4f}; wrote {weights} and {meta}')


if __name__ == '__main__':
    main()
