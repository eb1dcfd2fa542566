"""Where the feature networks' weight files come from, and how to find them offline without ever downloading.

Search order for a file: an explicit path (a file, or a folder to look in), then ``$SAN_EXT_WEIGHTS`` (a folder), then
torch hub's checkpoint cache ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``), where
``torch.hub`` and torch-fidelity themselves would have saved a download. A missing file raises
:class:`WeightsNotFoundError` naming the file, its URL and the folders searched; nothing is fetched.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from san_ext import dist
from san_ext.files import file_sha256

__all__ = ['DINOV2_VITL14_WEIGHTS', 'INCEPTION_WEIGHTS', 'VGG16_WEIGHTS', 'WeightFile', 'WeightsNotFoundError',
           'find_weights', 'load_state_dict', 'search_dirs']

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


class WeightsNotFoundError(FileNotFoundError):
    """A feature network's weight file is not on this machine; the message says which file to put where."""


@dataclass(frozen=True)
class WeightFile:
    """A published weight file: its name, other names of the same bytes, its URL and its SHA-256 prefix (torch
    hub's naming convention: ``name-<first 8 hex digits of the SHA-256>.pth``; None where the publisher gives no
    hash, and then only the hash of the file actually used is recorded)."""

    name: str
    url: str
    sha256_prefix: Optional[str]
    what: str
    aliases: tuple[str, ...] = ()


INCEPTION_WEIGHTS = WeightFile(
    name='weights-inception-2015-12-05-6726825d.pth',
    url='https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth',
    sha256_prefix='6726825d',
    what='TF InceptionV3 2015-12-05 (FID/KID/IS) as converted by torch-fidelity, ~91 MB',
    # pytorch-fid's release of the same converted graph carries the same hash suffix, hence the same bytes.
    aliases=('pt_inception-2015-12-05-6726825d.pth',),
)

VGG16_WEIGHTS = WeightFile(
    name='vgg16-397923af.pth',
    url='https://download.pytorch.org/models/vgg16-397923af.pth',
    sha256_prefix='397923af',
    what='torchvision VGG16 IMAGENET1K_V1 (precision/recall, density/coverage), ~528 MB',
)

DINOV2_VITL14_WEIGHTS = WeightFile(
    name='dinov2_vitl14_pretrain.pth',
    # The file torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14') fetches into $TORCH_HOME/hub/checkpoints
    # (dinov2/hub/backbones.py); Meta publishes no hash for it and torch hub does not check one.
    url='https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth',
    sha256_prefix=None,
    what='DINOv2 ViT-L/14 LVD-142M backbone, official release (FD_DINOv2), ~1.2 GB',
)


def search_dirs(explicit: Optional[PathLike] = None) -> list[Path]:
    """The folders searched, in order: ``explicit`` (when a folder), ``$SAN_EXT_WEIGHTS``, torch hub's cache."""
    dirs = []
    if explicit is not None and Path(explicit).expanduser().is_dir():
        dirs.append(Path(explicit).expanduser())
    if os.environ.get('SAN_EXT_WEIGHTS'):
        dirs.append(Path(os.environ['SAN_EXT_WEIGHTS']).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / 'checkpoints')
    return dirs


def find_weights(spec: WeightFile, explicit: Optional[PathLike] = None) -> Path:
    """Path of ``spec``'s file: ``explicit`` itself when it is a file, else the first hit in :func:`search_dirs`."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            raise WeightsNotFoundError(f'weights file not found: {path} (expected {spec.name}: {spec.what}); '
                                       f'download it from {spec.url} on a machine with internet and pass its path')
    dirs = search_dirs(explicit)
    for folder in dirs:
        for name in (spec.name, *spec.aliases):
            if (folder / name).is_file():
                return folder / name
    searched = ', '.join(str(d) for d in dirs)
    raise WeightsNotFoundError(
        f'{spec.name} not found ({spec.what}); this code never downloads. Fetch it on a machine with internet: '
        f'{spec.url} and put it in $SAN_EXT_WEIGHTS or $TORCH_HOME/hub/checkpoints, or pass its path (--weights). '
        f'Searched: {searched}')


def load_state_dict(spec: WeightFile, path: Path) -> tuple[dict, str]:
    """(state dict, SHA-256) of a weight file, loaded with ``weights_only=True`` so the file cannot run code.

    A file whose hash differs from the published one still loads (your own conversion, say) with a warning: scores
    computed with it are not comparable with published numbers.
    """
    sha = file_sha256(path)
    if spec.sha256_prefix is not None and not sha.startswith(spec.sha256_prefix) and dist.rank() == 0:
        log.warning('%s has SHA-256 %s..., not the published %s...: scores will not match published numbers',
                    path, sha[:8], spec.sha256_prefix)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # pickle, zip and format errors all mean the same thing here
        raise ValueError(f'cannot read {path} as a PyTorch state dict ({type(err).__name__}: {err}); '
                         f'download {spec.name} again from {spec.url}') from err
    if not isinstance(state, dict):
        raise ValueError(f'{path} holds a {type(state).__name__}, not a state dict; expected {spec.name}')
    return state, sha
