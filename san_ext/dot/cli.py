"""The ``--dot-*`` options shared by ``gen_images.py`` and ``calc_metrics.py``: latent DOT (Tanaka et al. 2019) on
z before G, with the D of the run's training state as the critic. Errors become ``click.ClickException``s that name
the flag.
"""

from __future__ import annotations

import click
import torch

from san_ext.checkpoint import CheckpointError

from . import OPTIMIZERS, DOTGenerator
from .loading import check_critic_fits, find_critic_state, load_critic

__all__ = ['dot_options', 'load_dot']


def load_dot(network_path: str, G, critic_path, device: torch.device, *, class_ids: list, truncation_psi: float,
             steps: int, lr: float, opt: str, k_eff, pairs: int, seed: int = 0, batch: int = 32,
             echo: bool = True) -> DOTGenerator:
    """G with latent DOT on z (before the mapping network), its critic the D of the run's training state.

    k_eff (unless given) is estimated once on 2 * ``pairs`` fresh N(0, I) latents per class in ``class_ids``
    (Tanaka's 100 pairs), seeded by ``seed``, so it does not depend on the seeds being rendered. Shared with
    calc_metrics.py; click errors name the flag.
    """
    try:
        state = find_critic_state(network_path, critic_path)
        critic = load_critic(state, device)
        check_critic_fits(G, critic)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(f'--dot-critic: {e}') from e
    dot = DOTGenerator(G, critic, k_eff=k_eff, steps=steps, lr=lr, opt=opt, truncation_psi=truncation_psi,
                       pairs=pairs, classes=[i for i in class_ids if i is not None] or None, batch_size=batch,
                       generator=torch.Generator().manual_seed(seed), device=device)
    k = dot.k_eff[~dot.k_eff.isnan()] if dot.k_eff.ndim else dot.k_eff
    dot.settings = dict(steps=steps, lr=lr, opt=opt, pairs=pairs, seed=seed, critic=str(state),
                        k_eff=dot.k_eff.tolist(), k_eff_estimated=k_eff is None)
    dot.description = (f'latent DOT: {steps} {opt} steps, lr {lr}, k_eff {k.mean().item():.4g}'
                       f'{" (mean over classes)" if dot.k_eff.ndim else ""}, critic {state}')
    if echo:
        click.echo(dot.description)
    return dot


def dot_options(fn):
    """The --dot-* options of gen_images.py and calc_metrics.py (latent DOT, Tanaka et al. 2019)."""
    options = [
        click.option('--dot-steps', type=click.IntRange(min=0), default=0, show_default=True,
                     help='Latent DOT steps on z before G (0: off). Paper: 10 to 30 for images'),
        click.option('--dot-lr', type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True,
                     help='DOT step size'),
        click.option('--dot-opt', type=click.Choice(OPTIMIZERS), default='sgd', show_default=True,
                     help='DOT optimizer (adam: beta1=0, beta2=0.9 as the DOT code)'),
        click.option('--dot-critic', metavar='STATE', help='training-state-*.safetensors (or its run dir) whose D is '
                     'the critic  [default: the state with the snapshot\'s kimg beside it, else the newest there]'),
        click.option('--dot-k', 'dot_k', type=click.FloatRange(min=0, min_open=True),
                     help='Fixed k_eff  [default: estimated per class on fresh latents]'),
        click.option('--dot-pairs', type=click.IntRange(min=1), default=100, show_default=True,
                     help='Random latent pairs (per class) for the k_eff estimate'),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
