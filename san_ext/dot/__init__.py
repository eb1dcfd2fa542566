"""Discriminator optimal transport (DOT, Tanaka et al. NeurIPS 2019) for sampling with a trained critic.

A critic divided by its effective Lipschitz constant k_eff approximates a Kantorovich potential, so samples can be
moved towards the data: :func:`latent_space_dot` (the main method, on z before G), :func:`target_space_dot` (on
samples directly; useful in 2-D), the naive baselines that ascend D alone, :func:`estimate_k_eff`, and
:class:`DOTGenerator` (G with latent DOT built in, for metrics and image generation). Works with any callables
``G(z[, c])`` and ``D(x[, c])`` returning one score per sample; :class:`ProjectedCritic` adapts our projected
discriminator with D's score as the training loss reads it (:mod:`san_ext.critic_score`). Imports only torch, the
standard library and that torch-only module (``san_ext.dot.loading``, which reads training states, is not imported
here).
"""

from .critic import Critic, ProjectedCritic, critic_scores
from .keff import PRIORS, estimate_k_eff, estimate_latent_k_eff, sample_prior
from .sampling import DOTGenerator, Truncated
from .transport import OPTIMIZERS, latent_space_dot, naive_latent_transport, naive_transport, target_space_dot

__all__ = ['OPTIMIZERS', 'PRIORS', 'Critic', 'DOTGenerator', 'ProjectedCritic', 'Truncated', 'critic_scores',
           'estimate_k_eff', 'estimate_latent_k_eff', 'latent_space_dot', 'naive_latent_transport', 'naive_transport',
           'sample_prior', 'target_space_dot']
