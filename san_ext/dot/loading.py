"""The critic of a san-ext run for DOT: find the training state that holds D, rebuild D, wrap it as a critic.

Used by ``gen_images.py`` and ``calc_metrics.py`` (``--dot-critic``). Unlike the rest of ``san_ext.dot`` this reads
our checkpoints (``san_ext.checkpoint``), so ``san_ext.dot`` does not import it. It needs no training code: D's
architecture and the critic's settings (input blur, reduction) travel in the training state's sidecar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from san_ext.checkpoint import (
    STATE_FORMAT,
    STATE_PREFIX,
    checkpoint_name,
    critic_settings,
    find_latest,
    is_network_pickle,
    load_discriminator,
    read_sidecar,
)

from .critic import ProjectedCritic

__all__ = ['check_critic_fits', 'find_critic_state', 'load_critic']

PathLike = Union[str, Path]


def find_critic_state(network: PathLike, critic: Optional[PathLike] = None) -> Path:
    """The training state whose D scores ``network``'s samples.

    ``critic``: a training-state file, or a run directory (its newest state). Default: ``network`` itself when it is
    a training state; else the state with the same kimg beside the snapshot; else the newest state in that
    directory. Raises FileNotFoundError naming what was looked for.
    """
    if critic is not None:
        path = Path(critic)
        if path.is_dir():
            latest = find_latest(path)
            if latest is None:
                raise FileNotFoundError(f'no complete {STATE_PREFIX}*.safetensors in {path}')
            return latest
        if not path.is_file():
            raise FileNotFoundError(f'{path} does not exist; give a {STATE_PREFIX}*.safetensors file or its run dir')
        return path
    network = Path(network)
    if is_network_pickle(network):
        raise FileNotFoundError(f'{network} is a released pickle: DOT takes its critic from a san-ext training state; '
                                'pass one with --dot-critic (a training-state-*.safetensors file or its run dir)')
    record = read_sidecar(network)
    if record['format'] == STATE_FORMAT:
        return network
    cur_nimg = (record.get('progress') or {}).get('cur_nimg')
    same = None if cur_nimg is None else network.with_name(f'{checkpoint_name(STATE_PREFIX, cur_nimg)}.safetensors')
    if same is not None and same.is_file() and same.with_suffix('.json').is_file():
        return same
    latest = find_latest(network.parent)
    if latest is None:
        looked = f'{same.name} (same kimg as the snapshot), then ' if same is not None else ''
        raise FileNotFoundError(f'DOT needs the discriminator, which snapshots do not hold; looked for {looked}any '
                                f'{STATE_PREFIX}*.safetensors in {network.parent} and found none. Pass the training '
                                f'state of this run explicitly (gen_images.py/calc_metrics.py: --dot-critic PATH)')
    return latest


def load_critic(state: PathLike, device: Union[str, torch.device] = 'cpu') -> ProjectedCritic:
    """D of a training state as a :class:`ProjectedCritic` (eval mode, frozen): D's score as the run's loss read it
    at that point of training (:func:`san_ext.checkpoint.critic_settings`: input blur at the state's ``cur_nimg``,
    per-backbone reduction)."""
    D = load_discriminator(state, device)
    settings = critic_settings(state)
    cur_nimg = int((read_sidecar(state).get('progress') or {}).get('cur_nimg', 0))
    return ProjectedCritic.at(D, settings, cur_nimg).to(device)


def check_critic_fits(G, critic: ProjectedCritic) -> None:
    """Raise ValueError unless the critic's D takes G's images and classes (same run, or at least same shapes)."""
    d = critic.D.cfg
    want = (int(G.img_channels), int(G.img_resolution), int(getattr(G, 'c_dim', 0)))
    have = (d.img_channels, d.img_resolution, d.c_dim)
    if want != have:
        raise ValueError(f'the critic\'s D takes {have[0]}x{have[1]}x{have[1]} images with c_dim={have[2]} but the '
                         f'generator makes {want[0]}x{want[1]}x{want[1]} images with c_dim={want[2]}; use a training '
                         'state of the same run')
